"""`python -m bench MODE ...`: one subcommand per bench, each in its own module (`python -m bench MODE --help`)."""

from __future__ import annotations

import argparse
import json
from types import ModuleType

from bench import burst, cold_start, delivery, embed, generation, http, sdk, soak, weights

# mode: (module, what it measures)
MODES: dict[str, tuple[ModuleType, str]] = {
    "generate": (generation, "streamed generation through the worker's handler against vLLM's engine"),
    "embed": (embed, "native embed jobs against AsyncLLM.encode (MODEL_NAME: an embedding model)"),
    "soak": (soak, "many short jobs, and each process's RSS as they run"),
    "sdk": (sdk, "submit -> first stream POST through the runpod SDK's job loop (TP 1)"),
    "http": (http, "streams through the load-balancing HTTP server vs the raw engine and vLLM's own server"),
    "burst": (burst, "a burst queued at once at the RunPod stand-in, per CONCURRENCY_MODE; then a second worker starting late"),
    "cold-start": (cold_start, "compiled cold starts of fresh containers sharing a volume's compile cache"),
    "weights": (weights, "weight-load time by storage (local, emulated network volume) and loader; pre-sharded TP 2"),
    "delivery": (delivery, "results and streams through the SDK while RunPod's API refuses a share of the posts"),
}
# The SDK bench points the SDK at its stand-in before anything imports runpod, and sets the loop itself.
OWN_EVENT_LOOP = {"sdk"}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    for name, (module, help_text) in MODES.items():
        mode = modes.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(mode)
        mode.add_argument("--json", help="also write the results to this file")
    # One start inside a fresh process of cold-start or weights.
    children = {"cold-start-child": cold_start.child_main, "weights-child": weights.child_main}
    for name in children:
        modes.add_parser(name)
    args = parser.parse_args()
    if args.mode in children:
        return children[args.mode]()
    if args.mode not in OWN_EVENT_LOOP:
        from worker.transports.queue.job_loop import use_uvloop

        use_uvloop()  # the loop handler.py runs the worker on; vLLM's raw side runs on it too, as under `vllm serve`
    results = MODES[args.mode][0].run(args)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
