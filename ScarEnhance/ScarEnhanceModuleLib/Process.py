"""Long work in a background process: the ScarEnhanceLib command line run by Slicer's Python.

The GUI stays responsive because nothing heavy (torch included) runs in Slicer's own process. One
``Worker`` process (``scarenhance serve``) runs the jobs one after the other and stays alive between them,
so the imports and the models are loaded once per Slicer session, not at every click. A ``BackgroundJob``
is polled (by a timer in the GUI, or by ``wait`` on the Python console); it reads the
``PROGRESS <fraction> <message>`` lines the command line prints, can be cancelled, and turns the
finished command into a result through a callback, once.

Slicer's ``PythonSlicer`` is a launcher that runs the real interpreter as its child and forwards no signal,
so stopping the launcher alone would leave the computation running. Cancel therefore closes the worker's
stdin (``serve`` exits when its input ends, also when Slicer itself dies) and ends the whole process group
(the process tree, with ``taskkill /T``, on Windows); the next job starts a new worker.
"""
from __future__ import annotations

import json
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


def serveCommand(pythonExecutable: str) -> List[str]:
    return [pythonExecutable, "-m", "ScarEnhanceLib", "serve"]


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
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True,
                       creationflags=subprocess.CREATE_NO_WINDOW)  # no console flashing up on Cancel
        return
    deadline = time.monotonic() + STOP_SECONDS / 2
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):  # gone; or (macOS) a group left with zombies only
        return
    while _groupAlive(process.pid) and time.monotonic() < deadline:
        process.poll()  # reap the launcher, or it stays a zombie of the group
        time.sleep(0.05)
    if _groupAlive(process.pid):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


SERVE_READY, SERVE_DONE = "READY", "DONE"  # the lines of ``scarenhance serve`` (ScarEnhanceLib/cli.py)


class Worker:
    """One ``scarenhance serve`` process that runs the jobs one at a time and keeps its models loaded. Started
    by the first job; a cancelled job ends it, and the next job starts a new one."""

    def __init__(self, pythonExecutable: str):
        self.pythonExecutable = pythonExecutable
        self._process: Optional[subprocess.Popen] = None
        self._job: Optional[BackgroundJob] = None
        self._lock = threading.Lock()

    def submit(self, arguments: List[str], onSuccess: Callable[[], Result],
               workDir: Optional[Path] = None) -> "BackgroundJob[Result]":
        """Run the command line with ``arguments`` (a command and its options) in the worker."""
        if self._job is not None and self._job.isRunning():
            raise RuntimeError("a ScarEnhance job is still running: wait for it or cancel it")
        if self._process is None or self._process.poll() is not None:
            self._start()
        job = BackgroundJob(self, self._process, onSuccess, workDir)
        with self._lock:
            self._job = job
        try:
            self._process.stdin.write(json.dumps([*arguments, "--progress", "lines"]) + "\n")
            self._process.stdin.flush()
        except OSError:  # the worker died between jobs: say so through the job
            job._end(None)
        return job

    def isAlive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """End the worker and every process it started (its job, if any, ends cancelled or failed)."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.stdin.close()  # serve exits at the end of its input
        except OSError:
            pass
        _stopProcessTree(process)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()

    def _start(self) -> None:
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LIB_PARENT), environment.get("PYTHONPATH")]))
        environment["PYTHONUNBUFFERED"] = "1"
        environment["PYTHONIOENCODING"] = "utf-8"  # paths and messages outside the console's code page
        process = subprocess.Popen(serveCommand(self.pythonExecutable), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, encoding="utf-8", errors="replace", env=environment,
                                   bufsize=1, **_processGroupOptions())
        self._process = process
        threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen) -> None:
        """Drain the pipe to the end whatever arrives (a reader that died would block the worker on a full pipe),
        handing each line to the job that runs."""
        for line in process.stdout:
            line = line.rstrip("\n")
            with self._lock:
                job = self._job
            if line == SERVE_READY or job is None or job._process is not process:
                continue
            if line.startswith(SERVE_DONE + " "):
                job._end(int(line.split(" ", 1)[1]) if line.split(" ", 1)[1].lstrip("-").isdigit() else None)
            else:
                job._line(line)
        process.wait()
        with self._lock:
            job = self._job
        if job is not None and job._process is process:
            job._end(None)  # the worker ended (cancel, crash): its job, if still running, ends with it


class BackgroundJob(Generic[Result]):
    """One command run by a ``Worker``."""

    def __init__(self, worker: Worker, process: subprocess.Popen, onSuccess: Callable[[], Result],
                 workDir: Optional[Path] = None):
        self.progress = 0.0
        self.message = "starting"
        self._worker = worker
        self._process = process  # the worker process it was sent to: only its output and end concern this job
        self._onSuccess = onSuccess
        self._workDir = workDir
        self._output: List[str] = []
        self._cancelled = False
        self._exitCode: Optional[int] = None
        self._ended = threading.Event()
        self._result: Optional[Result] = None
        self._error: Optional[Exception] = None
        self._finished = False

    def _line(self, line: str) -> None:
        _, fraction, message = (line.split(" ", 2) + ["", ""])[:3]
        if line.startswith("PROGRESS "):
            try:
                self.progress, self.message = float(fraction), message
                return
            except ValueError:
                pass
        self._output.append(line)  # logged by result(): Slicer's log handler calls Qt, from the main thread only

    def _end(self, exitCode: Optional[int]) -> None:
        """The command ended with ``exitCode`` (None: the worker ended before it finished)."""
        if not self._ended.is_set():
            self._exitCode = exitCode
            self._ended.set()

    def isRunning(self) -> bool:
        return not self._ended.is_set()

    def cancel(self) -> None:
        """Stop the job and every process it started; its work folder goes when its result is asked for. A job that
        has ended but whose result was not made yet is dropped too: nothing is loaded after a cancel (scene close,
        module reload)."""
        if self.isRunning():
            self._cancelled = True
            self._worker.stop()
            self._ended.wait(STOP_SECONDS)
            self._end(None)
        elif not self._finished:
            self._cancelled = True

    def wait(self, timeout: Optional[float] = None) -> Result:
        """Block until the command ends (the Python console's way); then the result."""
        if not self._ended.wait(timeout):
            self.cancel()
            try:
                self.result()  # removes its work folder, which holds a copy of the patient's volume
            except JobCancelled:
                pass
            raise JobFailed(f"the background process took longer than {timeout} s and was stopped")
        return self.result()

    def output(self) -> str:
        return "\n".join(self._output)

    def result(self) -> Result:
        """The result of a finished job (made once); raises JobCancelled or JobFailed."""
        if self.isRunning():
            raise RuntimeError("the job is still running")
        if not self._finished:
            self._finished = True
            for line in self._output:
                logging.info("ScarEnhance: %s", line)  # Slicer's application log keeps what the process said
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
        if self._exitCode != 0:
            errors = [line for line in self.output().splitlines() if "error" in line.lower()]
            what = f"exit code {self._exitCode}" if self._exitCode is not None else "the process ended"
            raise JobFailed(errors[-1].replace("scarenhance: error: ", "") if errors else
                            f"the background process failed ({what}):\n" + self.output()[-2000:])
        self.progress = 1.0
        return self._onSuccess()
