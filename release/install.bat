@echo off
rem install.bat - start the Hive worker at log-on of the current user, hidden, kept running by
rem Task Scheduler. Put it beside worker.exe and run it; no admin rights needed (docs/release.md).
rem
rem     install.bat [/dry-run] [TASK_NAME]   default task name: HiveWorker
rem
rem /dry-run checks worker.exe and writes the task definition as usual, then prints the schtasks
rem commands instead of running them and keeps hive-worker-task.xml beside it for reading.
rem
rem The task: log-on trigger for this user only (30 s delay), re-fired every 5 minutes while the
rem user is logged on, "do not start a new instance" while one runs, so a worker that exited
rem (crash, error exit, hard kill) is started again within 5 minutes; also "restart on failure"
rem for a start that failed. No time limit (the default would stop it after 72 hours), runs on
rem battery, normal priority (executors lower their own). worker.exe hides its own console
rem window (built with --hide-console hide-early). This replaces the 1.0.x chain of
rem startup_check.bat -> hidden watcher.bat: remove that chain before installing.
rem Installing again replaces the task. uninstall.bat removes it.
setlocal EnableExtensions DisableDelayedExpansion
set "DRY="
if /I "%~1"=="/dry-run" (set "DRY=1" & shift)
set "TASK=%~1"
if "%TASK%"=="" set "TASK=HiveWorker"
set "DIR=%~dp0"
set "EXE=%~dp0worker.exe"
set "XML=%~dp0hive-worker-task.xml"
set "ME=%USERDOMAIN%\%USERNAME%"
rem The task names its user by SID (plain ASCII, whatever the user name is); the name if whoami fails.
set "SID="
for /f "tokens=2 delims=," %%s in ('whoami /user /fo csv /nh 2^>nul') do set "SID=%%~s"
set "WHO=%ME%"
if defined SID if "%SID:~0,4%"=="S-1-" set "WHO=%SID%"

if not exist "%EXE%" goto :no_exe
rem "&" would end a command line below and is not allowed unescaped in XML.
set "CHECK=%DIR:&=%"
if not "%CHECK%"=="%DIR%" goto :bad_path
set "CHECK=%ME:&=%"
if not "%CHECK%"=="%ME%" goto :bad_path

echo Checking worker.exe ...
"%EXE%" --version
if errorlevel 1 goto :self_test_failed
"%EXE%" --self-test
if errorlevel 1 goto :self_test_failed

rem Only this account, SYSTEM and Administrators may write this folder and what is in it: the
rem worker runs code from here and self-update stages and swaps worker.exe here. A folder made
rem under C:\ otherwise inherits "Authenticated Users: Modify", which would let any local account
rem replace worker.exe or a staged update (docs/release.md). Inherited entries are dropped, then
rem any explicit ones for Everyone, Authenticated Users and Users.
set "FOLDER=%DIR:~0,-1%"
set "GRANTEE=%WHO%"
if "%WHO:~0,4%"=="S-1-" set "GRANTEE=*%WHO%"
echo Making "%FOLDER%" writable by this account, SYSTEM and Administrators only ...
icacls "%FOLDER%" /inheritance:r /grant:r "%GRANTEE%:(OI)(CI)F" "*S-1-5-18:(OI)(CI)F" "*S-1-5-32-544:(OI)(CI)F" >nul
if errorlevel 1 goto :acl_failed
icacls "%FOLDER%" /remove:g "*S-1-1-0" "*S-1-5-11" "*S-1-5-32-545" >nul 2>&1

rem Write the task definition as UTF-8 (paths and user names may be non-ASCII). Element order
rem matters: the schema's trigger elements are a sequence (Enabled before Repetition).
set "OLDCP="
for /f "tokens=2 delims=:" %%c in ('chcp') do set "OLDCP=%%c"
if defined OLDCP set "OLDCP=%OLDCP: =%"
if defined OLDCP set "OLDCP=%OLDCP:.=%"
chcp 65001 >nul
> "%XML%" echo ^<?xml version="1.0" encoding="UTF-8"?^>
>>"%XML%" echo ^<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task"^>
>>"%XML%" echo   ^<RegistrationInfo^>^<Description^>The Hive worker (worker.exe beside install.bat). Installed by install.bat; removed by uninstall.bat.^</Description^>^</RegistrationInfo^>
>>"%XML%" echo   ^<Triggers^>
>>"%XML%" echo     ^<LogonTrigger^>
>>"%XML%" echo       ^<Enabled^>true^</Enabled^>
>>"%XML%" echo       ^<Repetition^>^<Interval^>PT5M^</Interval^>^<StopAtDurationEnd^>false^</StopAtDurationEnd^>^</Repetition^>
>>"%XML%" echo       ^<UserId^>%WHO%^</UserId^>
>>"%XML%" echo       ^<Delay^>PT30S^</Delay^>
>>"%XML%" echo     ^</LogonTrigger^>
>>"%XML%" echo   ^</Triggers^>
>>"%XML%" echo   ^<Principals^>
>>"%XML%" echo     ^<Principal id="Author"^>
>>"%XML%" echo       ^<UserId^>%WHO%^</UserId^>
>>"%XML%" echo       ^<LogonType^>InteractiveToken^</LogonType^>
>>"%XML%" echo       ^<RunLevel^>LeastPrivilege^</RunLevel^>
>>"%XML%" echo     ^</Principal^>
>>"%XML%" echo   ^</Principals^>
>>"%XML%" echo   ^<Settings^>
>>"%XML%" echo     ^<MultipleInstancesPolicy^>IgnoreNew^</MultipleInstancesPolicy^>
>>"%XML%" echo     ^<DisallowStartIfOnBatteries^>false^</DisallowStartIfOnBatteries^>
>>"%XML%" echo     ^<StopIfGoingOnBatteries^>false^</StopIfGoingOnBatteries^>
>>"%XML%" echo     ^<AllowHardTerminate^>true^</AllowHardTerminate^>
>>"%XML%" echo     ^<StartWhenAvailable^>false^</StartWhenAvailable^>
>>"%XML%" echo     ^<RunOnlyIfNetworkAvailable^>false^</RunOnlyIfNetworkAvailable^>
>>"%XML%" echo     ^<IdleSettings^>^<StopOnIdleEnd^>false^</StopOnIdleEnd^>^<RestartOnIdle^>false^</RestartOnIdle^>^</IdleSettings^>
>>"%XML%" echo     ^<AllowStartOnDemand^>true^</AllowStartOnDemand^>
>>"%XML%" echo     ^<Enabled^>true^</Enabled^>
>>"%XML%" echo     ^<Hidden^>true^</Hidden^>
>>"%XML%" echo     ^<RunOnlyIfIdle^>false^</RunOnlyIfIdle^>
>>"%XML%" echo     ^<WakeToRun^>false^</WakeToRun^>
>>"%XML%" echo     ^<ExecutionTimeLimit^>PT0S^</ExecutionTimeLimit^>
>>"%XML%" echo     ^<Priority^>5^</Priority^>
>>"%XML%" echo     ^<RestartOnFailure^>^<Interval^>PT1M^</Interval^>^<Count^>255^</Count^>^</RestartOnFailure^>
>>"%XML%" echo   ^</Settings^>
>>"%XML%" echo   ^<Actions Context="Author"^>
>>"%XML%" echo     ^<Exec^>
>>"%XML%" echo       ^<Command^>%EXE%^</Command^>
>>"%XML%" echo       ^<WorkingDirectory^>%DIR%^</WorkingDirectory^>
>>"%XML%" echo     ^</Exec^>
>>"%XML%" echo   ^</Actions^>
>>"%XML%" echo ^</Task^>
if defined OLDCP chcp %OLDCP% >nul

if defined DRY goto :dry_run
schtasks /Create /TN "%TASK%" /XML "%XML%" /F
set "RC=%ERRORLEVEL%"
del "%XML%" >nul 2>&1
if not "%RC%"=="0" goto :acl_failed
echo error: icacls could not restrict the folder's permissions (see above); not installed.
echo Install into a folder this account created (e.g. %%LOCALAPPDATA%%\HiveWorker or C:\HiveWorker).
exit /b 1

:create_failed

echo Starting it now ...
schtasks /Run /TN "%TASK%" >nul
if errorlevel 1 echo warning: could not start the task now; it starts at the next log-on.
echo.
echo Installed: task "%TASK%" starts "%EXE%" at log-on of %ME%, hidden.
echo Its log: "%DIR%logs\worker.log"   status: "%EXE%" --status
echo Remove it with uninstall.bat.
exit /b 0

:dry_run
echo dry run: would run: schtasks /Create /TN "%TASK%" /XML "%XML%" /F
echo dry run: would run: schtasks /Run /TN "%TASK%"
echo dry run: task "%TASK%" would start "%EXE%" at log-on of %ME% (%WHO%), hidden; definition kept in "%XML%"
exit /b 0

:no_exe
echo error: worker.exe is not beside install.bat: %EXE%
exit /b 1

:bad_path
echo error: the folder or the user name contains "&", which this script cannot put into the task.
echo Move worker.exe and install.bat to a folder without "&".
exit /b 1

:self_test_failed
echo error: worker.exe failed its self-test (see above); not installed.
exit /b 1

:acl_failed
echo error: icacls could not restrict the folder's permissions (see above); not installed.
echo Install into a folder this account created (e.g. %%LOCALAPPDATA%%\HiveWorker or C:\HiveWorker).
exit /b 1

:create_failed
echo error: schtasks could not create the task (exit %RC%).
echo If it said "Access is denied", this PC's policy wants admin rights for log-on tasks: run
echo install.bat from an elevated prompt of the SAME user (docs/release.md).
exit /b %RC%
