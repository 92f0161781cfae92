"""Leases on storage (seqgen.lease): a second writer fails at once naming the holder, a stale lease
is taken over, a lost lease is noticed, racing takers cannot both win -- on a local disk,
``memory://`` and S3 (moto's server on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from fsspec.core import url_to_fs

from seqgen.lease import Lease, LeaseHeld, LeaseLost, check_holder, dataset_lease, run_lease


@pytest.fixture(params=["local", "memory", pytest.param("s3", marks=pytest.mark.s3)])
def lease_url(request, tmp_path):
    name = f"lease-{uuid.uuid4().hex[:8]}"
    if request.param == "local":
        return str(tmp_path / name / "lease.json")
    if request.param == "memory":
        return f"memory://{name}/lease.json"
    return f"{request.getfixturevalue('s3').url('lease')}/lease.json"


def _plant(url: str, holder: str, heartbeat: float, timeout: float = 1.0) -> None:
    """A lease object as another writer leaves it (e.g. one whose process died at ``heartbeat``)."""
    fs, path = url_to_fs(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, json.dumps({"holder": holder, "what": "run 'x'", "heartbeat": heartbeat,
                                   "timeout": timeout}).encode())


def test_a_second_writer_fails_at_once_naming_the_holder(lease_url):
    with Lease(lease_url, "run 'x'", timeout=30) as first:
        tick = time.time()
        with pytest.raises(LeaseHeld, match=rf"run 'x' is being written by {first.holder} .*taken over 30 s after"):
            Lease(lease_url, "run 'x'", timeout=30).acquire()
        assert time.time() - tick < 30  # without waiting for the holder's 30 s timeout
    with Lease(lease_url, "run 'x'", timeout=30):  # released: the next writer gets it
        pass
    fs, path = url_to_fs(lease_url)
    assert not fs.exists(path)


def test_heartbeats_keep_a_live_lease_and_a_stale_one_is_taken_over(lease_url, caplog):
    with Lease(lease_url, "run 'x'", timeout=0.6) as first:
        time.sleep(1.5)  # > timeout: only the heartbeats keep it
        with pytest.raises(LeaseHeld):
            Lease(lease_url, "run 'x'", timeout=0.6).acquire()
    _plant(lease_url, "deadhost:123:abc", heartbeat=time.time() - 5, timeout=1.0)
    with caplog.at_level("WARNING", logger="seqgen.lease"), Lease(lease_url, "run 'x'", timeout=30) as taker:
        check_holder(lease_url, taker.holder, "run 'x'")
    assert "taking over the lease of deadhost:123:abc" in caplog.text
    assert first.lost is None


def test_a_writer_that_lost_its_lease_notices(lease_url):
    lease = Lease(lease_url, "run 'x'", timeout=0.4).acquire()
    _plant(lease_url, "other:1:new", heartbeat=time.time() + 60)  # taken over during a stall
    with pytest.raises(LeaseLost, match="no longer holds its lease .*other:1:new"):
        check_holder(lease_url, lease.holder, "run 'x'")
    deadline = time.time() + 10
    while lease.lost is None and time.time() < deadline:
        time.sleep(0.05)
    assert "lost the lease to other:1:new" in lease.lost
    lease.release()  # must not delete the new holder's lease
    fs, path = url_to_fs(lease_url)
    assert json.loads(fs.cat_file(path))["holder"] == "other:1:new"


@pytest.mark.parametrize("stale", [False, True])
def test_racing_writers_cannot_both_win(lease_url, stale):
    if stale:
        _plant(lease_url, "deadhost:1:x", heartbeat=time.time() - 60)
    barrier, won, lost = threading.Barrier(6), [], []

    def contend():
        lease = Lease(lease_url, "run 'x'", timeout=30)
        barrier.wait()
        try:
            won.append(lease.acquire())
        except LeaseHeld:
            lost.append(lease)

    threads = [threading.Thread(target=contend) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 5
    check_holder(lease_url, won[0].holder, "run 'x'")
    won[0].release()


def test_a_killed_holder_on_this_host_is_taken_over_at_once(tmp_path, caplog):
    """A real process holds the lease and is SIGKILLed: its PID is gone, so its lease is taken over
    without waiting for the timeout (a killed `seqgen train` can be re-run at once)."""
    url = str(tmp_path / "run" / "lease.json")
    code = (f"import time; from seqgen.lease import Lease; Lease({url!r}, 'run x', timeout=600).acquire(); "
            "print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == b"held"
        with pytest.raises(LeaseHeld, match=f":{proc.pid}:"):
            Lease(url, "run 'x'").acquire()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with caplog.at_level("WARNING", logger="seqgen.lease"), Lease(url, "run 'x'"):
        pass
    assert "whose process on this host has exited" in caplog.text


# -- the writers that take leases -----------------------------------------------------------------
@pytest.mark.ray
def test_train_and_preprocess_refuse_a_name_another_writer_holds(ray_session):
    from seqgen import config
    from seqgen.data.presets import text_preset
    from seqgen.data.text import preprocess_text
    from seqgen.storage import Storage
    from seqgen.train.run import train

    st = Storage.from_url(f"memory://lease-writers-{uuid.uuid4().hex[:8]}")
    with dataset_lease(st, "shakespeare"):
        with pytest.raises(LeaseHeld, match="dataset 'shakespeare' is being written by"):
            preprocess_text(st, "shakespeare", text_preset("shakespeare"), use_ray=False, force=True)
    preprocess_text(st, "shakespeare", text_preset("shakespeare"), use_ray=False)

    cfg = config.load(None, ["run_name=leased", "model.hidden_size=8", "train.batch_size=4", "train.seq_len=10",
                             "train.eval_tokens=200", "train.max_steps=2", "train.eval_every=2",
                             "train.progress=false"])
    with run_lease(st, "leased"):
        with pytest.raises(LeaseHeld, match="run 'leased' is being written by"):
            train(cfg, st)
    assert train(cfg, st).latest_checkpoint.endswith("checkpoint_00000002")
    assert not st.exists(f"{st.run_dir('leased')}/lease.json")  # released when the run ends


@pytest.mark.ray
def test_a_run_whose_lease_is_taken_over_stops_before_its_next_checkpoint(ray_session):
    from seqgen import checkpoint as ckpt
    from seqgen import config
    from seqgen.data.presets import text_preset
    from seqgen.data.text import preprocess_text
    from seqgen.storage import Storage
    from seqgen.train.run import train

    st = Storage.from_url(f"memory://lease-fence-{uuid.uuid4().hex[:8]}")
    preprocess_text(st, "shakespeare", text_preset("shakespeare"), use_ray=False)
    cfg = config.load(None, ["run_name=fenced", "model.hidden_size=8", "train.batch_size=4", "train.seq_len=10",
                             "train.eval_tokens=100", "train.max_steps=100000", "train.eval_every=5",
                             "train.progress=false"])
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(error=_error_of(train, cfg, st)))
    thread.start()
    run_url = st.url_of(st.run_dir("fenced"))
    deadline = time.time() + 120
    while not ckpt.list_checkpoints(run_url) and time.time() < deadline:
        time.sleep(0.02)
    _plant(run_lease(st, "fenced").url, "newwriter:2:y", heartbeat=time.time() + 600)
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert "no longer holds its lease (now: newwriter:2:y)" in str(outcome["error"])
    steps = [int(u.rsplit("_", 1)[-1]) for u in ckpt.list_checkpoints(run_url)]
    assert max(steps) < 100000


def _error_of(fn, *args):
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - the test inspects it
        return e
    return None
