"""The executor pool: one handle per executor process, task limits, process-tree measuring, Windows jobs."""
