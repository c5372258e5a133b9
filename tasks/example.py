"""A worked example for task authors: docs/writing-tasks.md walks through it.

Run it alone:   python main.py --run example --params '{"text": "hi"}'
"""

from executor import api


def example(text: str, repeat: int = 1) -> dict:
    """Echo ``text`` back ``repeat`` times: params arrive as keyword arguments."""
    log = api.get_logger()
    if not isinstance(repeat, int) or repeat < 1:
        # A clean failure: the server gets this message, the result kind is task_failed.
        raise api.TaskFailure(f"repeat must be a positive whole number, got {repeat!r}")
    log.info("echoing %d time(s)", repeat)
    # The scratch folder is fresh for this task and removed afterwards.
    (api.scratch_dir() / "note.txt").write_text(text, encoding="utf-8")
    return {"status": "success", "data": {"echo": [text] * repeat}}
