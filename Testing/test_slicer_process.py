"""The Slicer module's background job, without Slicer: what a cancel or a timeout leaves behind."""
import sys
from types import SimpleNamespace

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "ScarEnhance"))

from ScarEnhanceModuleLib.Process import BackgroundJob, JobCancelled, JobFailed  # noqa: E402


def _job(tmp_path, stop=lambda: None):
    loaded = []
    work = tmp_path / "work"
    work.mkdir()
    (work / "volume.nrrd").write_bytes(b"the patient's volume")
    job = BackgroundJob(SimpleNamespace(stop=lambda: stop(job)), process=None,
                        onSuccess=lambda: loaded.append("results") or "results", workDir=work)
    return job, loaded, work


def test_a_job_cancelled_after_it_ended_but_before_its_result_was_made_loads_nothing(tmp_path):
    job, loaded, work = _job(tmp_path)
    job._end(0)  # the process finished; the widget had not polled it yet
    job.cancel()  # scene close or module reload
    with pytest.raises(JobCancelled):
        job.result()
    assert loaded == [] and not work.exists()


def test_a_finished_job_keeps_its_result_after_a_late_cancel(tmp_path):
    job, loaded, work = _job(tmp_path)
    job._end(0)
    assert job.result() == "results"
    job.cancel()
    assert job.result() == "results" and loaded == ["results"] and not work.exists()


def test_a_wait_that_times_out_stops_the_job_and_removes_its_work_folder(tmp_path):
    job, loaded, work = _job(tmp_path, stop=lambda job: job._end(None))
    with pytest.raises(JobFailed, match="took longer than 0.01 s"):
        job.wait(timeout=0.01)
    assert loaded == [] and not work.exists()
