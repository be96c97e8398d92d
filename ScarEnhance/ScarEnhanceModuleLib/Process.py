"""Long work in a background process: the ScarEnhanceLib command line run by Slicer's Python.

The GUI stays responsive because nothing heavy (torch included) runs in Slicer's own process. A
``BackgroundJob`` is polled (by a timer in the GUI, or by ``wait`` on the Python console); it reads the
``PROGRESS <fraction> <message>`` lines the command line prints, can be cancelled, and turns the
finished process into a result through a callback, once.

Slicer's ``PythonSlicer`` is a launcher that runs the real interpreter as its child and forwards no signal,
so stopping the launcher alone would leave the computation running. Cancel therefore closes the job's stdin
(the command line, started with ``--stop-on-stdin-eof``, exits when it sees the end of its input, also when
Slicer itself dies) and ends the whole process group (the process tree, with ``taskkill /T``, on Windows).
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
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
    return [pythonExecutable, "-m", "ScarEnhanceLib", "--stop-on-stdin-eof", *arguments, "--progress", "lines"]


STOP_SECONDS = 5.0  # after Cancel, every process of the job is gone within this time


def _processGroupOptions() -> dict:
    """Popen options that put the job in a process group of its own, with no console window on Windows."""
    if os.name == "nt":
        startup = subprocess.STARTUPINFO()
        startup.dwFlags |= subprocess.STARTF_USESHOWWINDOW
        startup.wShowWindow = 0
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW,
                "startupinfo": startup}
    return {"start_new_session": True}


def _groupAlive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stopProcessTree(process: subprocess.Popen) -> None:
    """End ``process`` and every process it started (the launcher's child included)."""
    if os.name == "nt":
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True)
        return
    deadline = time.monotonic() + STOP_SECONDS / 2
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    while _groupAlive(process.pid) and time.monotonic() < deadline:
        process.poll()  # reap the launcher, or it stays a zombie of the group
        time.sleep(0.05)
    if _groupAlive(process.pid):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class BackgroundJob(Generic[Result]):
    def __init__(self, command: List[str], onSuccess: Callable[[], Result], workDir: Optional[Path] = None):
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LIB_PARENT), environment.get("PYTHONPATH")]))
        environment["PYTHONUNBUFFERED"] = "1"
        environment["PYTHONIOENCODING"] = "utf-8"  # paths and messages outside the console's code page
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
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, encoding="utf-8", errors="replace", env=environment,
                                         bufsize=1, **_processGroupOptions())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """Drain the pipe to the end whatever arrives (a reader that died would block the process on a full
        pipe)."""
        for line in self._process.stdout:
            line = line.rstrip("\n")
            _, fraction, message = (line.split(" ", 2) + ["", ""])[:3]
            try:
                if line.startswith("PROGRESS "):
                    self.progress, self.message = float(fraction), message
                    continue
            except ValueError:
                pass
            self._output.append(line)
            logging.info("ScarEnhance: %s", line)  # Slicer's application log keeps what the process said

    def isRunning(self) -> bool:
        return self._process.poll() is None

    def cancel(self) -> None:
        """Stop the job and every process it started; its work folder goes when its result is asked for."""
        self._cancelled = True
        try:
            self._process.stdin.close()  # the command line stops at the end of its input
        except OSError:
            pass
        _stopProcessTree(self._process)
        try:
            self._process.wait(timeout=STOP_SECONDS)
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
