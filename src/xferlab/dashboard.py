"""`python -m xferlab.dashboard <sweep folder or experiment>`: the sweep as a W&B report.

    python -m xferlab.dashboard outputs/sweeps/demo/latest        # a sweep folder
    python -m xferlab.dashboard demo                               # an experiment: its newest sweep
    python -m xferlab.dashboard demo --publish --entity <team>     # online: save it to W&B

The report (`reporting.wandb_report`): test macro F1 per backbone with its spread over units, the
report folder's table and paired-difference verdicts, per-class F1, the runs grouped by experiment
and backbone. Run `python -m xferlab.report <sweep>` first: the dashboard quotes its files.

Offline (the default, as every xferlab run; or no credentials, or no server) it writes the report's
definition to `<sweep>/report/wandb_report.json` and prints how to publish it. With `--publish` it
saves the report to W&B and prints its address; the runs must be there first (`wandb sync`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEFINITION = "wandb_report.json"


def find_sweep(where: str, root: Path | None = None) -> Path:
    """A sweep folder as given, or an experiment's newest sweep under `outputs/sweeps/<experiment>/`
    (its `latest` link where there is one)."""
    path = Path(where)
    if path.is_dir():
        return path
    root = Path(root or os.environ.get("XFERLAB_ROOT", ".")) / "outputs" / "sweeps" / where
    if (root / "latest").is_dir():
        return root / "latest"
    sweeps = sorted(p for p in root.glob("*") if p.is_dir() and any(p.glob("*/metrics.json")))
    if not sweeps:
        raise SystemExit(f"{where}: neither a sweep folder nor an experiment with a finished sweep under {root}")
    return sweeps[-1]


def publish_steps(sweep: Path, file: Path) -> str:
    return (f"wrote the W&B report's definition to {file} (offline: nothing was uploaded). To publish it:\n"
            f"  wandb login                                   # once, or set WANDB_API_KEY\n"
            f"  wandb sync {sweep}/*/wandb/offline-run-*      # upload the sweep's runs\n"
            f"  python -m xferlab.dashboard {sweep} --publish [--entity <team>]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xferlab.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="a sweep folder (e.g. outputs/sweeps/demo/latest) or an experiment name")
    parser.add_argument("--publish", action="store_true", help="save the report to W&B (online; needs credentials)")
    parser.add_argument("--entity", help="the W&B entity (default: the runs' logger.entity, else your default)")
    parser.add_argument("--project", help="the W&B project (default: the runs' logger.project)")
    parser.add_argument("--out", type=Path, help=f"where to write the definition (default: <sweep>/report/{DEFINITION})")
    args = parser.parse_args(argv)

    from xferlab.reporting.wandb_report import build, definition, for_server

    sweep = find_sweep(args.sweep)
    try:
        report, runs = build(sweep, args.entity, args.project)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if runs.without_wandb:
        print(f"note: {len(runs.without_wandb)} job(s) have no W&B run (logger=csv or logger.mode=disabled), e.g. "
              f"{runs.without_wandb[0]}; the report shows the others", file=sys.stderr)
    if args.publish:
        from xferlab.runtime.loggers import has_wandb_credentials

        if not has_wandb_credentials():
            print("error: --publish needs W&B credentials: `wandb login` or WANDB_API_KEY", file=sys.stderr)
            return 2
        try:
            import wandb

            entity = report.entity or wandb.Api().default_entity
            saved = for_server(report, entity, report.project).save()
        except Exception as err:  # noqa: BLE001 - no server: keep the definition, say so
            print(f"W&B did not take the report ({err}); writing it offline instead", file=sys.stderr)
        else:
            print(f"published: {saved.url}")
            return 0
    out = args.out or sweep / "report" / DEFINITION
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"entity": report.entity or None, "project": report.project, "sweep": str(sweep),
              "experiment": runs.experiment, "run_ids": runs.run_ids, "report": definition(report)}
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(publish_steps(sweep, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
