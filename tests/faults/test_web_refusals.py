"""The second fault matrix, web part: every bad request is a 4xx (or 503) JSON answer naming the problem, never a
500 and never a hang; no folder under ``--runs`` is created or changed by a refused request. Work per request is
bounded (parameter ranges, a time limit that frees the model, JSON size and depth, photo aspect ratio); the
memory-hungry cases run in a child process under ``RLIMIT_AS`` so a regression cannot hurt the machine."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from PIL import Image

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from robustcars.web.app import ServeSettings, create_app  # noqa: E402

from .common import ROOT, bomb_png, snapshot  # noqa: E402


def png(size=(40, 30), color=(200, 30, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else 128).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def web(world, tmp_path_factory):
    """``--runs`` with the tiny trained run (3 classes), a link to a run outside it and a dangling link."""
    root = tmp_path_factory.mktemp("webfaults")
    runs, reports = root / "runs", root / "reports"
    shutil.copytree(world["run"], runs / "tiny", ignore=shutil.ignore_patterns("attack-*"))
    shutil.copytree(world["run"], root / "elsewhere", ignore=shutil.ignore_patterns("attack-*"))
    os.symlink(root / "elsewhere", runs / "outside")
    os.symlink(root / "nothing-here", runs / "dangling")
    bomb_png(root / "bomb.png")
    settings = ServeSettings(runs=runs, data=world["data"].parent, reports=reports, attack_seconds=1.0)
    with TestClient(create_app(settings)) as c:
        yield {"client": c, "runs": runs, "root": root}


@dataclass
class WebCase:
    name: str
    method: str
    url: str
    status: int
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def up(data: bytes, name: str = "photo.png") -> dict[str, Any]:
    return {"file": (name, data, "image/png")}


ATTACK, PREDICT, TRAIN = "/api/attack", "/api/predict", "/api/train"
RUN = {"run": "tiny"}
DEEP = "[" * 100_000 + "]" * 100_000  # 200 kB: refused by its size
NESTED = "[" * 10_000 + "]" * 10_000  # 20 kB: refused by its depth
TRAIN_OK = {"name": "new", "data": "cars", "arch": "resnet18", "weights": "none", "epochs": 1, "img_size": 32}

CASES = [
    # attack parameters: bounded in the registry
    WebCase("steps 1e9", "post", ATTACK, 400, "pgd: steps must be an integer in [1, 10000], got 1000000000",
            {**RUN, "attack": "pgd", "params": '{"steps": 1e9}'}, up(png())),
    WebCase("restarts 1000", "post", ATTACK, 400, "pgd: restarts must be an integer in [1, 100], got 1000",
            {**RUN, "attack": "pgd", "params": '{"restarts": 1000}'}, up(png())),
    WebCase("hsj queries 10**6", "post", ATTACK, 400, "max_gradient_eval_steps must be an integer in [1, 100000]",
            {**RUN, "attack": "hsj", "params": '{"max_gradient_eval_steps": 1000000}'}, up(png())),
    WebCase("square queries 10**6", "post", ATTACK, 400, "n_queries must be an integer in [1, 100000]",
            {**RUN, "attack": "square", "params": '{"n_queries": 1000000}'}, up(png())),
    WebCase("seed -1", "post", ATTACK, 400, "seed must be an integer in [0, 4294967295], got -1",
            {**RUN, "attack": "pgd", "params": '{"seed": -1}'}, up(png())),
    WebCase("unknown parameter", "post", ATTACK, 400, "fgsm: unknown parameter 'steps'",
            {**RUN, "params": '{"steps": 3}'}, up(png())),
    WebCase("unknown attack", "post", ATTACK, 400, "unknown attack 'pgdd'", {**RUN, "attack": "pgdd"}, up(png())),
    WebCase("eps 2", "post", ATTACK, 400, "eps must be a number in [0, 1] (pixel scale), got 2.0",
            {**RUN, "eps": "2"}, up(png())),
    WebCase("eps nan", "post", ATTACK, 400, "eps must be a number in [0, 1] (pixel scale), got nan",
            {**RUN, "eps": "nan"}, up(png())),
    WebCase("eps not a number", "post", ATTACK, 422, "eps", {**RUN, "eps": "abc"}, up(png())),
    # the params field as JSON: size and depth limits
    WebCase("params nested 100,000 deep", "post", ATTACK, 413, "params larger than 64 kB",
            {**RUN, "params": DEEP}, up(png())),
    WebCase("params nested 10,000 deep", "post", ATTACK, 400, "params nested deeper than 32 levels",
            {**RUN, "params": NESTED}, up(png())),
    WebCase("params of 100 kB", "post", ATTACK, 413, "params larger than 64 kB",
            {**RUN, "params": json.dumps({"x": "a" * 100_000})}, up(png())),
    WebCase("params not JSON", "post", ATTACK, 400, "params must be a JSON object", {**RUN, "params": "{steps"},
            up(png())),
    WebCase("params a list", "post", ATTACK, 400, "params must be a JSON object", {**RUN, "params": "[1, 2]"},
            up(png())),
    # attacks that need more classes than the run has
    WebCase("apgd_t on 3 classes at tiny eps", "post", ATTACK, 400, "apgd_t needs a model of at least 4 classes",
            {**RUN, "attack": "apgd_t", "eps": "0.0001"}, up(png())),
    WebCase("fab_t with 5 targets of 3 classes", "post", ATTACK, 400, "n_target_classes must be at most 2",
            {**RUN, "attack": "fab_t", "params": '{"n_target_classes": 5}'}, up(png())),
    WebCase("attack top-k 500 of 3", "post", ATTACK, 400, "--top-k must be in [1, 3], got 500",
            {**RUN, "top_k": "500"}, up(png())),
    # photos: size, aspect ratio, decoding
    WebCase("1 x 100,000 pixels (predict)", "post", PREDICT, 422, "an aspect ratio above 20:1", RUN,
            up(png((100_000, 1), mode="L"))),
    WebCase("1 x 100,000 pixels (attack)", "post", ATTACK, 422, "an aspect ratio above 20:1", RUN,
            up(png((100_000, 1), mode="L"))),
    WebCase("100,000 x 1 pixels", "post", PREDICT, 422, "an aspect ratio above 20:1", RUN,
            up(png((1, 100_000), mode="L"))),
    WebCase("decompression bomb", "post", PREDICT, 422, "refused, too many pixels (decompression bomb)", RUN, None),
    WebCase("more pixels than --max-pixels", "post", PREDICT, 422, "is more than the 40,000,000 accepted", RUN,
            up(png((8000, 6000), mode="L"))),
    WebCase("empty upload", "post", PREDICT, 400, "empty upload", RUN, up(b"")),
    WebCase("not an image", "post", PREDICT, 422, "not an image", RUN, up(b"plain text, not pixels")),
    WebCase("truncated PNG", "post", PREDICT, 422, "cannot read image", RUN, up(png()[:60])),
    WebCase("no file", "post", PREDICT, 422, "file", RUN),
    WebCase("predict top-k 500 of 3", "post", PREDICT, 400, "--top-k must be in [1, 3], got 500",
            {**RUN, "top_k": "500"}, up(png())),
    WebCase("threshold 2", "post", PREDICT, 422, "threshold", {**RUN, "threshold": "2"}, up(png())),
    # runs: names, links, confinement
    WebCase("run name with ..", "post", PREDICT, 400, "run must be a folder name", {"run": "../tiny"}, up(png())),
    WebCase("missing run", "post", PREDICT, 404, "no trained run 'nope'", {"run": "nope"}, up(png())),
    WebCase("run linked outside --runs", "post", PREDICT, 403, "is outside the allowed folder", {"run": "outside"},
            up(png())),
    # training jobs: validated before any process or folder
    WebCase("train seed -1", "post", TRAIN, 400, "--seed must be an integer in [0, 4294967295], got -1",
            json={**TRAIN_OK, "seed": -1}),
    WebCase("train seed 2**70", "post", TRAIN, 400, f"--seed must be an integer in [0, 4294967295], got {2**70}",
            json={**TRAIN_OK, "seed": 2**70}),
    WebCase("train into a dangling link", "post", TRAIN, 400, "run 'dangling' exists already (a folder, file or link)",
            json={**TRAIN_OK, "name": "dangling"}),
    WebCase("train into an existing run", "post", TRAIN, 400, "run 'tiny' exists already",
            json={**TRAIN_OK, "name": "tiny"}),
    WebCase("train freeze 100", "post", TRAIN, 400, "--freeze must be in [0, 9] for resnet18, got 100",
            json={**TRAIN_OK, "freeze": 100}),
    WebCase("train data outside --data", "post", TRAIN, 403, "is outside the allowed folder",
            json={**TRAIN_OK, "data": "../.."}),
    WebCase("train data missing", "post", TRAIN, 422, "no dataset folder 'nope'", json={**TRAIN_OK, "data": "nope"}),
    WebCase("train unknown arch", "post", TRAIN, 400, "unknown architecture 'vgg16'",
            json={**TRAIN_OK, "arch": "vgg16"}),
    WebCase("train bad name", "post", TRAIN, 400, "run name must be a folder name", json={**TRAIN_OK, "name": "a/b"}),
    WebCase("train epochs 0", "post", TRAIN, 422, "epochs", json={**TRAIN_OK, "epochs": 0}),
    WebCase("train lr 5", "post", TRAIN, 422, "lr", json={**TRAIN_OK, "lr": 5}),
    WebCase("train body nested 100,000 deep", "post", TRAIN, 413, "JSON body larger than 64 kB",
            content=DEEP.encode(), headers={"content-type": "application/json"}),
    WebCase("train body nested 10,000 deep", "post", TRAIN, 400, "JSON body nested deeper than 32 levels",
            content=NESTED.encode(), headers={"content-type": "application/json"}),
    WebCase("train body of 100 kB", "post", TRAIN, 413, "JSON body larger than 64 kB",
            content=json.dumps({**TRAIN_OK, "name": "x" * 100_000}).encode(),
            headers={"content-type": "application/json"}),
    WebCase("train body not JSON", "post", TRAIN, 422, "JSON", content=b"{name",
            headers={"content-type": "application/json"}),
    # jobs
    WebCase("unknown job", "get", "/api/jobs/nope", 404, "no job 'nope'"),
    WebCase("cancel unknown job", "post", "/api/jobs/nope/cancel", 404, "no job 'nope'"),
    WebCase("resume unknown job", "post", "/api/jobs/nope/resume", 404, "no job 'nope'"),
    WebCase("unknown endpoint", "get", "/api/nope", 404, "Not Found"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_web_refusal(web, case: WebCase):
    c, runs = web["client"], web["runs"]
    files = case.files
    if case.name == "decompression bomb":
        files = up((web["root"] / "bomb.png").read_bytes())
    before = snapshot(runs), sorted(p.name for p in runs.iterdir())
    if case.method == "get":
        r = c.get(case.url)
    else:
        r = c.post(case.url, data=case.data or None, files=files, json=case.json, content=case.content,
                   headers=case.headers or None)
    assert r.status_code == case.status, r.text
    body = r.json()
    assert set(body) == {"error"} and case.message in body["error"], body
    assert "Traceback" not in body["error"] and "\n" not in body["error"]
    assert (snapshot(runs), sorted(p.name for p in runs.iterdir())) == before


def test_a_long_attack_is_stopped_and_frees_the_model(web):
    """Past its limit an attack stops: a quick request (PGD, 200 steps, limit 0.01 s) with a 503, a job (PGD,
    10,000 steps, limit 1 s) as failed, naming the option; a prediction answers at once after each."""
    settings = ServeSettings(runs=web["runs"], data=web["root"], reports=web["root"] / "reports",
                             attack_seconds=0.01, attack_job_seconds=1.0)
    with TestClient(create_app(settings)) as c:
        r = c.post(ATTACK, data={**RUN, "attack": "pgd", "params": '{"steps": 200}'}, files=up(png()))
        assert r.status_code == 503 and "limit of 0.01 s (serve --attack-seconds)" in r.json()["error"], r.text
        t0 = time.monotonic()
        r = c.post(ATTACK, data={**RUN, "attack": "pgd", "params": '{"steps": 10000}'}, files=up(png()))
        assert r.status_code == 202, r.text
        job = r.json()
        while job["state"] == "running" and time.monotonic() - t0 < 30:
            time.sleep(0.1)
            job = c.get(f"/api/attack-jobs/{job['job']}").json()
        assert job["state"] == "failed" and "limit of 1 s (serve --attack-job-seconds)" in job["error"], job
        t0 = time.monotonic()
        r = c.post(PREDICT, data=RUN, files=up(png()))
        assert r.status_code == 200 and time.monotonic() - t0 < 10


def test_default_top_k_is_the_class_count_when_smaller(web):
    r = web["client"].post(PREDICT, data=RUN, files=up(png()))
    assert r.status_code == 200 and len(r.json()["top_k"]) == 3


def test_a_16_bit_photo_is_the_same_picture_as_its_8_bit_copy(web):
    grey = np.random.default_rng(0).integers(0, 256, (30, 40), dtype=np.uint8)
    eight, sixteen = io.BytesIO(), io.BytesIO()
    Image.fromarray(grey).save(eight, format="PNG")
    Image.fromarray(grey.astype(np.uint16) * 257).save(sixteen, format="PNG")
    a, b = (web["client"].post(PREDICT, data=RUN, files=up(x.getvalue())).json() for x in (eight, sixteen))
    assert a["image"] == b["image"] and a["top_k"] == b["top_k"]


def test_links_outside_runs_are_not_listed(web):
    names = [r["name"] for r in web["client"].get("/api/runs").json()["runs"]]
    assert names == ["tiny"]


def test_api_docs_load_without_a_cdn(web):
    c = web["client"]
    page = c.get("/docs")
    assert page.status_code == 200 and "cdn." not in page.text and "unpkg" not in page.text
    scripts = [s.split('"')[0] for s in page.text.split('src="')[1:]] + \
              [s.split('"')[0] for s in page.text.split('href="')[1:] if s.split('"')[0].endswith(".css")]
    assert scripts and all(c.get(s).status_code == 200 for s in scripts), scripts
    assert c.get("/redoc").status_code == 200


DOS = r'''
import io, json, resource, sys
from pathlib import Path
from PIL import Image
from fastapi.testclient import TestClient
from robustcars.web.app import ServeSettings, create_app  # noqa: E402

runs, data = Path(sys.argv[1]), Path(sys.argv[2])
client = TestClient(create_app(ServeSettings(runs=runs, data=data, reports=runs.parent / "dos-reports")))
vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 1_500_000_000, vm + 1_500_000_000))  # 1.5 GB more at most
def png(w, h):
    buf = io.BytesIO(); Image.new("L", (w, h), 128).save(buf, format="PNG", optimize=True); return buf.getvalue()
out = {}
for w in (1_000_000, 10_000_000):
    for url in ("/api/predict", "/api/attack"):
        r = client.post(url, data={"run": "tiny"}, files={"file": ("p.png", png(w, 1), "image/png")})
        out[f"{url} 1x{w}"] = [r.status_code, r.json()["error"]]
r = client.post("/api/attack", data={"run": "tiny", "attack": "pgd", "params": "[" * 30_000},
                files={"file": ("p.png", png(40, 30), "image/png")})
out["params nested 30,000 deep"] = [r.status_code, r.json()["error"]]
r = client.post("/api/train", content=b"[" * 30_000, headers={"content-type": "application/json"})
out["body nested 30,000 deep"] = [r.status_code, r.json()["error"]]
print(json.dumps(out))
'''


def test_memory_hungry_requests_are_refused_under_a_memory_limit(web, world):
    """1 x 1,000,000 and 1 x 10,000,000 pixel PNGs (their resize alone was 3 GB and 31 GB) and a params field
    nested a million deep, in a child process allowed 1.5 GB more than it has: each a 4xx naming the reason."""
    p = subprocess.run([sys.executable, "-c", DOS, str(web["runs"]), str(world["data"].parent)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    for key, (status, message) in out.items():
        if "nested" in key:
            assert status == 400 and "nested deeper than 32 levels" in message, (key, message)
        else:
            assert status == 422 and "aspect ratio above 20:1" in message, (key, message)


def test_the_server_stops_on_ctrl_c_during_a_long_attack(web, world, tmp_path):
    """``robustcars serve`` with an attack job of 10,000 PGD steps under way: SIGINT ends the server within
    seconds (the job stops at its next step), where it used to need SIGKILL."""
    import signal
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, "-m", "robustcars", "serve", "--runs", str(web["runs"]), "--data",
                               str(world["data"].parent), "--reports", str(tmp_path / "rep"), "--port", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=2)
                break
            except OSError:
                time.sleep(0.3)
        body, boundary = _multipart({"run": "tiny", "attack": "pgd", "params": '{"steps": 10000}'}, png())
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/attack", data=body, method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        import threading

        threading.Thread(target=lambda: _ignore(urllib.request.urlopen, request, timeout=120), daemon=True).start()
        time.sleep(3)  # the attack is under way
        t0 = time.monotonic()
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        assert time.monotonic() - t0 < 20
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _ignore(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except OSError:
        pass


def _multipart(fields: dict[str, str], photo: bytes) -> tuple[bytes, str]:
    boundary = "robustcars-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.png"\r\n'
                 "Content-Type: image/png\r\n\r\n".encode() + photo + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), boundary


def test_apgd_t_on_six_classes_targets_every_other_class(web):
    """AutoAttack's default of 9 target classes cannot hold for 6 classes: not given, it becomes 5 (it used to
    end in a 500 IndexError); given explicitly above 5, it is refused."""
    from ..test_web import fake_run

    fake_run(web["runs"] / "six", classes=6)
    settings = ServeSettings(runs=web["runs"], data=web["root"], reports=web["root"] / "reports", attack_seconds=600)
    with TestClient(create_app(settings)) as c:  # the shared app stops attacks after 1 s: too short on a busy machine
        _apgd_t_targets(c)
    shutil.rmtree(web["runs"] / "six")


def _apgd_t_targets(c) -> None:
    r = c.post(ATTACK, data={"run": "six", "attack": "apgd_t", "eps": "0.0001", "params": '{"n_iter": 2}'},
               files=up(png()))
    assert r.status_code == 200, r.text
    assert r.json()["params"]["n_target_classes"] == 5
    r = c.post(ATTACK, data={"run": "six", "attack": "apgd_t", "params": '{"n_iter": 2, "n_target_classes": 9}'},
               files=up(png()))
    assert r.status_code == 400 and "n_target_classes must be at most 5 (classes - 1), got 9" in r.json()["error"]


def test_a_photo_whose_resize_would_be_too_large_is_refused(world, tmp_path):
    """With --max-pixels 2,000, a 60 x 20 photo (1,200 pixels) passes the pixel count, but its crop-resize to the
    tiny run's 32 px would hold 32 x 96 = 3,072 pixels: refused before resizing."""
    runs = tmp_path / "runs"
    shutil.copytree(world["run"], runs / "tiny", ignore=shutil.ignore_patterns("attack-*"))
    app = create_app(ServeSettings(runs=runs, data=world["data"].parent, reports=tmp_path / "rep", max_pixels=2000))
    with TestClient(app) as c:
        r = c.post(PREDICT, data=RUN, files=up(png((60, 20))))
        assert r.status_code == 422 and "would be resized to 3,072 pixels for the model, more than the 2,000" \
            in r.json()["error"], r.text
        assert c.post(PREDICT, data=RUN, files=up(png((40, 30)))).status_code == 200
