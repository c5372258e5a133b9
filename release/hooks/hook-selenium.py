"""PyInstaller hook for selenium (only used when it is installed: requirements-browser.txt).

tasks/prom/fetch_browser.py imports the Chrome classes by their modules, so PyInstaller follows
those imports (selenium.webdriver itself resolves its names lazily, which an import
analysis cannot see). Data files read at run time: the JavaScript atoms of remote/ and
common/, and Selenium Manager for the platform being built (it finds or downloads a
chromedriver when none is on the PATH). The other platforms' Selenium Manager binaries and
the DevTools protocol bindings (~10 MB, unused) are left out.
"""

import platform
import sys

from PyInstaller.utils.hooks import collect_data_files

if sys.platform == "win32":
    _manager = "webdriver/common/windows/*"
elif sys.platform == "darwin":
    _manager = "webdriver/common/macos/*"
else:
    _manager = "webdriver/common/linux-arm64/*" if platform.machine() in ("aarch64", "arm64") \
        else "webdriver/common/linux-x86_64/*"

datas = collect_data_files("selenium", includes=["webdriver/remote/*.js", "webdriver/common/*.js", _manager])
