"""Screenshots of TensorBoard's error-term views for the README, taken in headless Chromium from a real run.

    .venv/bin/python docs/images/make_screenshot.py                    # train the default run, shoot it
    .venv/bin/python docs/images/make_screenshot.py --logdir lightning_logs   # shoot runs you already have

Without ``--logdir`` it runs ``manual-backprop fit`` with no other arguments than an off progress bar
(the default run: SigmoidMLP on the digits, ErrorTermLogger at its defaults) in a temporary
directory. Then it starts the venv's ``tensorboard`` on the log directory, waits until the server
has loaded the error terms, points Chromium (``chromium``, Debian's package; ``--chromium`` for
another) at each view and writes the PNGs next to this script. The server is stopped by its process
id at the end. Not a test and not run by CI: it needs Chromium, which the project does not install.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
WINDOW = (1400, 1000)

# name → (query, dashboard): what each screenshot shows. The legacy dashboards draw their charts as
# SVG, which headless Chromium renders without a GPU; the time-series one is asked to do the same.
VIEWS = {
    "tensorboard_error_terms.png": ("forceSVG=true&smoothing=0&tagFilter=" + urllib.parse.quote("^error_terms"),
                                    "timeseries"),
    "tensorboard_speed_of_learning.png": ("", "custom_scalars&_smoothingWeight=0"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", type=Path, help="a TensorBoard log directory to show (default: train one)")
    parser.add_argument("--chromium", default="chromium", help="the Chromium executable (default: chromium)")
    parser.add_argument("--out", type=Path, default=HERE, help=f"where the PNGs go (default: {HERE})")
    args = parser.parse_args(argv)
    chromium = shutil.which(args.chromium)
    if chromium is None:
        raise SystemExit(f"no {args.chromium!r} on PATH: install Chromium (Debian: apt-get install chromium)")

    with tempfile.TemporaryDirectory() as tmp:
        logdir = args.logdir or train(Path(tmp))
        port = _free_port()
        server = subprocess.Popen([str(BIN / "tensorboard"), "--logdir", str(logdir), "--port", str(port),
                                   "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_until_loaded(base, logdir, server)
            for name, (query, dashboard) in VIEWS.items():
                shoot(chromium, f"{base}/{'?' + query if query else ''}#{dashboard}", args.out / name, Path(tmp))
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=20)


def train(directory: Path) -> Path:
    """The default ``manual-backprop fit`` run, in ``directory``; its log directory."""
    print("training the default run (manual-backprop fit) ...", flush=True)
    done = subprocess.run([str(BIN / "manual-backprop"), "fit", "--trainer.enable_progress_bar=false"],
                          cwd=directory, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"manual-backprop fit failed:\n{done.stderr[-3000:]}")
    print(done.stdout.strip().splitlines()[-2])
    return directory / "lightning_logs"


def shoot(chromium: str, url: str, png: Path, tmp: Path) -> None:
    """One screenshot of ``url`` in a fresh headless Chromium profile; fails on a blank page."""
    profile = Path(tempfile.mkdtemp(dir=tmp, prefix="chromium-"))
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}", "--hide-scrollbars", "--virtual-time-budget=20000",
                    f"--screenshot={png}", f"--window-size={WINDOW[0]},{WINDOW[1]}", url],
                   check=True, capture_output=True, timeout=180)
    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    if colours is not None and len(colours) < 10:
        raise SystemExit(f"{png.name}: the page at {url} came out (nearly) blank")
    print(f"wrote {png} ({url})")


def _wait_until_loaded(base: str, logdir: Path, server: subprocess.Popen, timeout_s: float = 120) -> None:
    """Until the server holds every run's error terms as the event files have them (it reads in the background)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"tensorboard exited with {server.returncode}")
        try:
            if _complete(base, logdir):
                return
        except (urllib.error.URLError, ConnectionError):
            pass  # not answering yet, or that run or tag not loaded yet (404)
        time.sleep(0.5)
    raise SystemExit(f"tensorboard at {base} did not serve the error terms of {logdir} within {timeout_s:.0f} s")


def _complete(base: str, logdir: Path) -> bool:
    runs = _get_json(base, "/data/runs")
    if not runs:
        return False
    for run in runs:
        events = EventAccumulator(str(logdir / run), size_guidance={"scalars": 0, "images": 0}).Reload()
        tags = events.Tags()
        for tag in [t for t in tags["scalars"] if t.startswith("error_terms_rms/")][:1]:
            if len(_get_json(base, "/data/plugin/scalars/scalars", run=run, tag=tag)) < len(events.Scalars(tag)):
                return False
        if "error_terms_heatmap" in tags["images"]:
            served = _get_json(base, "/data/plugin/images/images", run=run, tag="error_terms_heatmap")
            if len(served) < len(events.Images("error_terms_heatmap")):
                return False
    return True


def _get_json(base: str, route: str, **params):
    url = base + route + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
