@echo off
rem uninstall.bat - remove the Task Scheduler task that install.bat created, stopping the worker
rem it started. Files are left alone: the folder holds the identity (worker.conf), logs and
rem results not yet delivered (outbox\). Same rights as install.bat: none beyond the user's own.
rem
rem     uninstall.bat [/dry-run] [TASK_NAME]   default task name: HiveWorker
rem
rem /dry-run prints the schtasks commands instead of running them.
setlocal EnableExtensions DisableDelayedExpansion
set "DRY="
if /I "%~1"=="/dry-run" (set "DRY=1" & shift)
set "TASK=%~1"
if "%TASK%"=="" set "TASK=HiveWorker"
if not defined DRY goto :query
echo dry run: would run: schtasks /Query /TN "%TASK%"
echo dry run: would run: schtasks /End /TN "%TASK%"
echo dry run: would run: schtasks /Delete /TN "%TASK%" /F
exit /b 0

:query

schtasks /Query /TN "%TASK%" >nul 2>&1
if errorlevel 1 goto :not_installed

rem /End terminates the running instance at once (no grace period): its results are already on
rem disk, and a task it was running is reported as "interrupted" at the next start. A hard kill
rem leaves the one-file exe's unpack folder (%TEMP%\_MEI...) behind; it is safe to delete.
schtasks /End /TN "%TASK%" >nul 2>&1
schtasks /Delete /TN "%TASK%" /F
if errorlevel 1 goto :delete_failed
echo Removed task "%TASK%".
echo A worker.exe started outside the task (by hand, or by an update) is not stopped by this:
tasklist /FI "IMAGENAME eq worker.exe"
exit /b 0

:not_installed
echo Task "%TASK%" is not installed; nothing to do.
exit /b 0

:delete_failed
echo error: schtasks could not delete task "%TASK%".
exit /b 1
