"""`relay bench --profile`'s breakdown of py-spy's collapsed stacks, by stage and by thread."""

from relay.tools.bench.profile import profile_breakdown

WORKER = 'process 10:"python -m relay serve -c r.toml";process 11:"python -m relay serve -c r.toml --worker 0"'


def test_stages_and_threads_of_a_worker_under_a_supervisor() -> None:
    collapsed = "\n".join([
        f"{WORKER};thread (12): MainThread;prepare (relay/stages/pipeline.py:90);entries (relay/stages/typed.py:89) 6",
        f"{WORKER};thread (12): MainThread;map_batch (<mapping fluentbit-nginx>:3) 2",
        f"{WORKER};thread (13): relay-queue;DbThread._run (relay/store/jobs.py:136);"
        "GroupCommit._commit (relay/store/group_commit.py:70) 2",
        f"{WORKER};thread (13): relay-queue;DbThread._run (relay/store/jobs.py:113) 40",  # waiting: left out
    ])
    text = profile_breakdown(collapsed)
    assert text.splitlines()[0].startswith("relay profile: 10 samples")
    assert "60.0%  decode: gunzip + JSON" in text
    assert "20.0%  map + validate" in text
    assert "20.0%  queue: commit ingest group" in text
    assert text.splitlines()[-1] == "  by thread: MainThread 80.0%, relay-queue 20.0%"
