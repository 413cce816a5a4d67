"""Two stand-in pipeline stages for runner tests: 'first' writes a.txt from the config's simulate seed (and,
with ``folder``, the folder d/); 'second' copies a.txt to b.txt, or raises ``crash`` when
``calls["crash_second"]`` is set."""

from __future__ import annotations

from atlas.pipeline import runner, stages


def install_toy_stages(monkeypatch, *, folder: bool = False, crash: type[Exception] = RuntimeError) -> dict:
    """Replace the runner's stages by the two toy stages; returns their call counts (and the crash switch)."""
    calls = {"first": 0, "second": 0, "crash_second": False}

    def run_first(ctx):
        calls["first"] += 1
        (ctx.path / "a.txt").write_text(f"seed={ctx.config.simulate.seed}")
        if folder:
            (ctx.path / "d").mkdir(exist_ok=True)
            (ctx.path / "d" / "x.txt").write_text("x")

    def run_second(ctx):
        calls["second"] += 1
        if calls["crash_second"]:
            raise crash("crash in the middle of a stage")
        (ctx.path / "b.txt").write_text((ctx.path / "a.txt").read_text())

    first_outputs = (lambda c: [c.path / "a.txt", c.path / "d"]) if folder else (lambda c: [c.path / "a.txt"])
    first = stages.Stage("first", "toy", lambda c: True, lambda c: c.config.simulate, lambda c: [],
                         first_outputs, run_first)
    second = stages.Stage("second", "toy", lambda c: True, lambda c: {}, lambda c: [c.path / "a.txt"],
                          lambda c: [c.path / "b.txt"], run_second)
    monkeypatch.setattr(runner, "STAGES", [first, second])
    return calls
