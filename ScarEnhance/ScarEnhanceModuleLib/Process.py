"""Long work in a background process: the ScarEnhanceLib command line run by Slicer's Python.

The GUI stays responsive because nothing heavy (torch included) runs in Slicer's own process. A
``BackgroundJob`` is polled (by a timer in the GUI, or by ``wait`` on the Python console); it reads the
``PROGRESS <fraction> <message>`` lines the command line prints, can be cancelled, and turns the
finished process into a result through a callback, once.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Generic, List, Optional, TypeVar

import ScarEnhanceLib

Result = TypeVar("Result")
LIB_PARENT = Path(ScarEnhanceLib.__file__).resolve().parent.parent


class JobCancelled(RuntimeError):
    """The user cancelled the job; no result was made."""


class JobFailed(RuntimeError):
    """The background process failed; the message is what it said."""


def defaultPythonExecutable() -> str:
    """Slicer's PythonSlicer where it exists (a Python with Slicer's packages), else this Python."""
    return shutil.which("PythonSlicer") or sys.executable


def libraryCommand(pythonExecutable: str, arguments: List[str]) -> List[str]:
    return [pythonExecutable, "-m", "ScarEnhanceLib", *arguments, "--progress", "lines"]


class BackgroundJob(Generic[Result]):
    def __init__(self, command: List[str], onSuccess: Callable[[], Result], workDir: Optional[Path] = None):
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LIB_PARENT), environment.get("PYTHONPATH")]))
        environment["PYTHONUNBUFFERED"] = "1"
        self.command = command
        self.progress = 0.0
        self.message = "starting"
        self._onSuccess = onSuccess
        self._workDir = workDir
        self._output: List[str] = []
        self._cancelled = False
        self._result: Optional[Result] = None
        self._error: Optional[Exception] = None
        self._finished = False
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                         env=environment, bufsize=1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._process.stdout:
            line = line.rstrip("\n")
            if line.startswith("PROGRESS "):
                _, fraction, message = (line.split(" ", 2) + [""])[:3]
                self.progress, self.message = float(fraction), message
            else:
                self._output.append(line)

    def isRunning(self) -> bool:
        return self._process.poll() is None

    def cancel(self) -> None:
        self._cancelled = True
        if self.isRunning():
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()

    def wait(self, timeout: Optional[float] = None) -> Result:
        """Block until the process ends (the Python console's way); then the result."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.isRunning():
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise JobFailed(f"the background process took longer than {timeout} s and was stopped")
            time.sleep(0.1)
        return self.result()

    def output(self) -> str:
        self._reader.join(timeout=5)
        return "\n".join(self._output)

    def result(self) -> Result:
        """The result of a finished job (made once); raises JobCancelled or JobFailed."""
        if self.isRunning():
            raise RuntimeError("the job is still running")
        if not self._finished:
            self._finished = True
            try:
                self._result = self._finish()
            except Exception as error:
                self._error = error
            finally:
                if self._workDir is not None:
                    shutil.rmtree(self._workDir, ignore_errors=True)
        if self._error is not None:
            raise self._error
        return self._result

    def _finish(self) -> Result:
        if self._cancelled:
            raise JobCancelled("cancelled")
        if self._process.returncode != 0:
            errors = [line for line in self.output().splitlines() if "error" in line.lower()]
            raise JobFailed(errors[-1].replace("scarenhance: error: ", "") if errors else
                            f"the background process failed (exit code {self._process.returncode}):\n"
                            + self.output()[-2000:])
        self.progress = 1.0
        return self._onSuccess()
