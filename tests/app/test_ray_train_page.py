"""Train page following a job that runs on a Ray cluster, like a local one: its worker is on
another node (its pid means nothing here), so the page goes by Ray's state, through the backend
recorded in the run folder. Ray's answers come from a stand-in client (tests/core/test_ray_backend.py
runs real jobs on a real local Ray)."""

from __future__ import annotations

from types import SimpleNamespace

from tests.app.conftest import no_exceptions
from tl_core.jobs import backends as job_backends

ADDRESS = "http://ray-head.test:8265"


class StandInRay:
    """Answers like ray.job_submission.JobSubmissionClient for one job."""

    def __init__(self) -> None:
        self.status, self.message = "RUNNING", ""

    def get_job_info(self, job_id: str):
        return SimpleNamespace(status=self.status, message=self.message)

    def stop_job(self, job_id: str) -> bool:
        self.status = "STOPPED"
        return True


def test_the_train_page_follows_a_ray_job(app, trained_run, monkeypatch):  # noqa: F811
    ray = StandInRay()
    monkeypatch.setitem(job_backends._clients, ADDRESS, ray)
    run = trained_run
    lines = (run.dir / "events.jsonl").read_text().splitlines()
    (run.dir / "events.jsonl").write_text("\n".join(line for line in lines if '"RunFinished"' not in line) + "\n")
    run.mark_queued(pid=None, queued_at=1.0)  # long ago: a local job would count as never started
    run.record_job(backend="ray", address=ADDRESS, job_id="raysubmit_test", cpus=2.0, gpus=1.0)

    ray.status = "PENDING"
    app.query_params["run"] = run.id
    app.switch_page("pages/3_train.py").run()
    no_exceptions(app)
    assert run.state == "queued"
    infos = " ".join(i.value for i in app.info).replace("\\", "")  # Markdown escapes, as rendered
    assert "queue of the Ray cluster at http://ray-head.test:8265 for 2 CPU and 1 GPU" in infos, infos

    ray.status = "RUNNING"
    run.mark_running(pid=4_000_000, pid_created=1.0)  # the worker's pid on a cluster node
    app.run()
    no_exceptions(app)
    assert run.state == "running"  # not taken for a dead local worker
    assert [p.proto.text for p in app.get("progress")] == ["Epoch 5 of 5 done"]  # the run folder's curves (the session's tiny run: 5 epochs)
    assert any(m.label == "Validation accuracy" and m.value != "—" for m in app.metric)
    assert app.button(key="stop") is not None
    assert not app.error

    ray.status, ray.message = "FAILED", "Job entrypoint command failed with exit code 137 (out of memory)"
    app.run()
    no_exceptions(app)
    assert run.state == "failed"
    errors = " ".join(e.value for e in app.error)
    assert "Ray cluster" in errors and "exit code 137" in errors
