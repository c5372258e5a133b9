"""PyInstaller hook for selectolax, used by ``python -m release.build`` (it overrides the contrib hook).

The contrib hook collects every data file of the package, which are its C and
Cython sources (lexbor.c alone is 3.2 MB): never read at run time, but unpacked
into _MEI on every start. Only the compiled extension is needed, and PyInstaller
finds it by following the imports in tasks/prom/parse.py.
"""

from PyInstaller.utils.hooks import collect_data_files

datas = collect_data_files("selectolax", excludes=["**/*.c", "**/*.pyx", "**/*.pxd", "**/*.pxi", "**/*.pyi"])
