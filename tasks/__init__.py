"""Task modules. Adding a task: a file here, an import and a TASK_REGISTRY entry in config.py."""
