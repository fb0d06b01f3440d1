from .progress import silence_libraries as _silence_libraries

_silence_libraries()  # ZEPHYR_PROGRESS=0: no library's progress bar either (see progress.py)
