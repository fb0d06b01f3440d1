"""Before and after a change: the tiny recipe's dSFT step time from two checkouts, measured in one run.

    python bench/compare.py <other checkout> [repeats]

runs `bench/run.py --sft-variant "tiny recipe"` from the other checkout and from this one, alternately,
`repeats` times each (3 by default), so that both see the same machine load; writes
bench/results/compare.json with every run and the ratio of the medians (this / other)."""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
RESULTS = HERE / "bench" / "results"


def sft_step(checkout: Path, work: Path) -> dict:
    """One tiny-recipe dSFT run of `checkout`'s code: its JSON line (step_s, tokens_per_s, mfu...)."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, str(checkout / "bench" / "run.py"), "--sft-variant", "tiny recipe", str(work)],
                          env=env, capture_output=True, text=True, cwd=checkout)
    if done.returncode:
        raise RuntimeError(f"{checkout}: the dSFT run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    other, repeats = Path(sys.argv[1]).resolve(), int(sys.argv[2]) if len(sys.argv) == 3 else 3
    if not (other / "bench" / "run.py").is_file():
        sys.exit(f"{other} is not a checkout of this repository (no bench/run.py)")
    runs = {"other": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(repeats):
            for name, checkout in (("other", other), ("this", HERE)):
                runs[name].append(sft_step(checkout, Path(tmp) / f"{name}-{k}"))
                print(name, k, f"{runs[name][-1]['step_s']:.4f} s per step, MFU {runs[name][-1]['mfu']:.0%}", flush=True)
    median = {name: statistics.median(r["step_s"] for r in rs) for name, rs in runs.items()}
    commit = {name: subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True,
                                   text=True).stdout.strip() for name, path in (("other", other), ("this", HERE))}
    result = {"date": time.strftime("%Y-%m-%d"), "commits": commit, "runs": runs, "median_step_s": median,
              "step_ratio_this_over_other": median["this"] / median["other"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compare.json").write_text(json.dumps(result, indent=1))
    print(f"median step: other ({commit['other']}) {median['other']:.4f} s, this ({commit['this']}) {median['this']:.4f} s, "
          f"ratio {result['step_ratio_this_over_other']:.3f}")


if __name__ == "__main__":
    main()
