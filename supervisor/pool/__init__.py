"""The executor pool: one handle per executor process, task limits, process-tree measuring and killing, Windows jobs."""
