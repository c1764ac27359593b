"""The web app: every endpoint with FastAPI's test client, each bad input, and the pages in a real browser."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from robustcars.errors import ConfigError  # noqa: E402
from robustcars.web.app import ServeSettings, create_app  # noqa: E402

from .conftest import SHARED, make_folder_dataset  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def fake_run(run: Path, classes: int = 16, img_size: int = 32) -> Path:
    """A run folder with an untrained ResNet-18 of ``classes`` classes (enough for top-15 bars)."""
    from robustcars.config import TrainConfig
    from robustcars.models.checkpoint import save_checkpoint
    from robustcars.models.zoo import build_model
    from robustcars.storage import write_json

    torch.manual_seed(0)  # the same untrained net every run: the tests below read its answers
    model = build_model("resnet18", classes, weights="none").eval()
    with torch.no_grad():
        model.model.fc.weight.mul_(200)  # an untrained net's logits are nearly flat: make its answers react
    cfg = TrainConfig(data="/nonexistent", out=str(run), arch="resnet18", weights="none", img_size=img_size,
                      resize="squash")
    save_checkpoint(run / "best.pt", {
        "arch": "resnet18", "num_classes": classes,
        "class_names": [f"Make{i} Model {2000 + i}" for i in range(classes)],
        "img_size": img_size, "resize": "squash", "mean": model.normalize.mean.flatten().tolist(),
        "std": model.normalize.std.flatten().tolist(), "weights_origin": "none", "frozen": [],
        "config": cfg.to_dict(), "epoch": 1, "metrics": {}, "versions": {}, "state_dict": model.state_dict()})
    write_json(run / "config.json", cfg.to_dict())
    write_json(run / "metrics.json", {"test_acc": 0.0625, "test_f1": 0.01, "best_epoch": 1})
    return run


def png_bytes(size=(40, 30), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def car_photo() -> bytes:
    """A real car image from ../shared/data when present, else a generated one."""
    test = SHARED / "stanford-cars-160" / "test"
    if test.is_dir():
        return sorted(sorted(test.iterdir())[0].iterdir())[0].read_bytes()
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    runs, data, reports = root / "runs", root / "data", root / "reports"
    runs.mkdir()
    fake_run(runs / "r16")
    make_folder_dataset(data / "cars")
    (reports / "rep1").mkdir(parents=True)
    (reports / "rep1" / "report.json").write_text(json.dumps({"title": "A report", "created": "2026-11-23",
                                                              "models": [{}]}))
    (reports / "rep1" / "index.html").write_text("<!doctype html><title>A report</title><p>hello</p>")
    os.symlink(root, data / "escape")          # a symlink out of the data root
    os.symlink(root, runs / "linked")           # and out of the runs root
    return runs, data, reports


@pytest.fixture(scope="module")
def client(roots):
    runs, data, reports = roots
    app = create_app(ServeSettings(runs=runs, data=data, reports=reports, max_upload_bytes=2_000_000,
                                   max_pixels=40_000_000))
    with TestClient(app) as c:
        yield c


def post_photo(client, url, data: bytes, name="car.jpg", **fields):
    return client.post(url, files={"file": (name, data, "application/octet-stream")},
                       data={k: str(v) for k, v in fields.items()})


# --- success paths ---------------------------------------------------------------------------------------

def test_runs_reports_and_docs(client):
    r = client.get("/api/runs")
    assert r.status_code == 200
    [run] = [x for x in r.json()["runs"] if x["name"] == "r16"]
    assert run["arch"] == "resnet18" and run["trained"] and run["test_accuracy"] == 0.0625
    reports = client.get("/api/reports").json()["reports"]
    assert reports == [{"name": "rep1", "title": "A report", "created": "2026-11-23", "models": 1,
                        "url": "/reports/rep1/index.html"}]
    assert "hello" in client.get("/reports/rep1/index.html").text
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/api/predict", "/api/attack", "/api/train"}
    for page in ("/", "/train", "/runs"):
        assert client.get(page).status_code == 200


def test_predict_gives_top_k_cam_and_prefilter(client):
    r = post_photo(client, "/api/predict", car_photo(), run="r16", top_k=15, cam="true", prefilter="true")
    assert r.status_code == 200, r.text
    body = r.json()
    probs = [t["probability"] for t in body["top_k"]]
    assert len(probs) == 15 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert body["cam"].startswith("data:image/png;base64,") and body["image"].startswith("data:image/png")
    assert 0 <= body["prefilter"]["car_probability"] <= 1 and len(body["prefilter"]["imagenet_top5"]) == 5


def test_attack_returns_what_changed(client):
    r = post_photo(client, "/api/attack", car_photo(), run="r16", attack="pgd", eps=0.03,
                   params=json.dumps({"steps": 3}), top_k=3)
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["norm"] == "linf" and b["linf"] <= 0.03 + 1e-6 and b["params"] == {"steps": 3}
    assert [c["clean_rank"] for c in b["clean_top3_rank_change"]] == [1, 2, 3]
    assert b["fooled"] == (b["adversarial_prediction"]["top_k"][0]["class"] != b["clean"]["top_k"][0]["class"])
    for key in ("adversarial", "perturbation", "cam", "adversarial_cam"):
        assert b[key].startswith("data:image/png;base64,")
    zero = post_photo(client, "/api/attack", car_photo(), run="r16", eps=0).json()
    assert zero["linf"] == 0 and not zero["fooled"]


def _attack_job(client, job: dict, timeout=180) -> dict:
    deadline = time.time() + timeout
    while job["state"] == "running" and time.time() < deadline:
        time.sleep(0.2)
        job = client.get(f"/api/attack-jobs/{job['job']}").json()
    return job


def test_a_long_attack_runs_as_a_job_beside_quick_predictions(client):
    """HopSkipJump (slow in the registry) answers 202 with a job; a prediction meanwhile answers at once; a
    second long attack is refused while it runs; cancel stops it; a short one ends with the usual answer."""
    r = post_photo(client, "/api/attack", car_photo(), run="r16", attack="hsj", eps=0.5,
                   params=json.dumps({"steps": 1000}))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "running" and job["attack"] == "hsj" and job["result"] is None
    t0 = time.monotonic()
    assert post_photo(client, "/api/predict", car_photo(), run="r16").status_code == 200
    assert time.monotonic() - t0 < 5
    busy = post_photo(client, "/api/attack", car_photo(), run="r16", attack="cw_l2", eps=0.5)
    assert busy.status_code == 409 and "still running" in busy.json()["error"]
    running = client.get(f"/api/attack-jobs/{job['job']}").json()
    assert running["state"] == "running" and running["model_calls"] > 0  # still going, and counting
    assert client.post(f"/api/attack-jobs/{job['job']}/cancel").status_code == 200
    stopped = _attack_job(client, job, timeout=30)
    assert stopped["state"] == "cancelled" and "cancelled" in stopped["error"]
    r = post_photo(client, "/api/attack", car_photo(), run="r16", attack="hsj", eps=0.5,
                   params=json.dumps({"steps": 1, "max_gradient_eval_steps": 10, "initial_gradient_eval_steps": 10}))
    assert r.status_code == 202, r.text
    done = _attack_job(client, r.json())
    assert done["state"] == "done", done["error"]
    assert done["result"]["norm"] == "l2" and done["result"]["adversarial"].startswith("data:image/png;base64,")
    assert client.get("/api/attack-jobs/attack-999").status_code == 404


def _wait(client, job, states=("done", "failed", "cancelled", "interrupted"), timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = client.get(f"/api/jobs/{job}").json()
        if s["state"] in states:
            return s
        time.sleep(0.3)
    raise AssertionError(f"job {job} still {s['state']}")


TRAIN = {"data": "cars", "arch": "resnet18", "weights": "none", "epochs": 1, "img_size": 32, "batch_size": 8,
         "workers": 0}


def test_a_training_job_writes_an_ordinary_run(client, roots):
    runs, _, _ = roots
    r = client.post("/api/train", json={**TRAIN, "name": "job1"})
    assert r.status_code == 202, r.text
    s = _wait(client, "job1")
    assert s["state"] == "done" and s["progress"] == 1.0 and len(s["history"]) == 1
    assert (runs / "job1" / "best.pt").is_file() and (runs / "job1" / "train.log").is_file()
    assert any("epoch 1/1 train" in line for line in s["log"]), s["log"]
    events = client.get("/api/jobs/job1/events").text
    assert events.startswith("data: {") and "event: end" in events
    listed = [x for x in client.get("/api/runs").json()["runs"] if x["name"] == "job1"]
    assert listed and listed[0]["job"]["state"] == "done"


def test_a_second_job_is_refused_and_cancel_then_resume(client, roots):
    r = client.post("/api/train", json={**TRAIN, "name": "long", "epochs": 300, "limit_per_class": 2})
    assert r.status_code == 202, r.text
    busy = client.post("/api/train", json={**TRAIN, "name": "other"})
    assert busy.status_code == 409 and "already running (long)" in busy.json()["error"]
    deadline = time.time() + 120
    while time.time() < deadline and not (roots[0] / "long" / "last.pt").is_file():
        time.sleep(0.2)
    assert client.post("/api/jobs/long/cancel").status_code == 200
    s = _wait(client, "long")
    assert s["state"] == "cancelled" and s["returncode"] == 130
    r = client.post("/api/jobs/long/resume")
    assert r.status_code == 202
    time.sleep(1)
    assert client.post("/api/jobs/long/cancel").status_code == 200
    assert _wait(client, "long")["state"] == "cancelled"


def test_a_job_running_when_the_server_died_shows_as_interrupted(roots):
    runs, data, reports = roots
    run = runs / "ghost"
    run.mkdir()
    (run / "job.json").write_text(json.dumps({"id": "ghost", "run": str(run), "args": [], "state": "running",
                                              "pid": 2 ** 22 + 12345, "started": 0}))
    app = create_app(ServeSettings(runs=runs, data=data, reports=reports))
    with TestClient(app) as c:
        assert c.get("/api/jobs/ghost").json()["state"] == "interrupted"
        r = c.post("/api/jobs/ghost/resume")  # nothing saved to resume from: a clear 400
        assert r.status_code == 400 and "no saved epoch to resume" in r.json()["error"]
    shutil.rmtree(run)


# --- bad input: always a 4xx JSON error, never a stack trace -----------------------------------------------

def big_png(side: int = 10_000) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (side, side)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("case, status, message", [
    ("not an image", 422, "not an image"),
    ("truncated", 422, "cannot read image"),
    ("10000 x 10000", 422, "10000x10000 pixels is more than the 40,000,000 accepted"),
    ("too large", 413, "upload larger than 1 MB"),
    ("unknown run", 404, "no trained run 'nope'"),
    ("run outside", 400, "run must be a folder name"),
    ("run symlink out", 403, "outside the allowed folder"),
    ("bad eps", 400, "eps must be a number in [0, 1]"),
    ("bad params", 400, "pgd: steps must be an integer in [1, 10000], got 0"),
    ("bad top_k", 422, "top_k"),
])
def test_bad_uploads(client, case, status, message):
    jpeg = car_photo()
    url, data, fields = "/api/predict", jpeg, {"run": "r16"}
    if case == "not an image":
        data = b"hello, not a photo"
    elif case == "truncated":
        data = jpeg[:400]
    elif case == "10000 x 10000":
        data = big_png()
    elif case == "too large":
        data = os.urandom(2_100_000)
    elif case == "unknown run":
        fields["run"] = "nope"
    elif case == "run outside":
        fields["run"] = "../runs/r16"
    elif case == "run symlink out":
        fields["run"] = "linked"
    elif case == "bad eps":
        url, fields = "/api/attack", {"run": "r16", "eps": 1.5}
    elif case == "bad params":
        url, fields = "/api/attack", {"run": "r16", "attack": "pgd", "params": json.dumps({"steps": 0})}
    elif case == "bad top_k":
        fields["top_k"] = 0
    r = post_photo(client, url, data, **fields)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and message in r.json()["error"]
    assert "Traceback" not in r.text


@pytest.mark.parametrize("change, status, message", [
    ({"data": "../"}, 403, "outside the allowed folder"),
    ({"data": "/etc"}, 403, "outside the allowed folder"),
    ({"data": "escape"}, 403, "outside the allowed folder"),
    ({"name": "../evil"}, 400, "run name must be a folder name"),
    ({"name": "r16"}, 400, "run 'r16' exists already"),
    ({"epochs": 0}, 422, "epochs"),
    ({"lr": 5}, 422, "lr"),
    ({"arch": "vgg"}, 400, "unknown architecture 'vgg'"),
    ({"data": "nothing"}, 422, "no dataset folder 'nothing'"),
])
def test_bad_training_configs(client, change, status, message):
    r = client.post("/api/train", json={**TRAIN, "name": "fresh", **change})
    assert r.status_code == status, r.text
    assert message in r.json()["error"] and "Traceback" not in r.text


def test_unknown_job_and_static_escape(client):
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.get("/reports/../runs/r16/best.pt").status_code == 404


def test_a_public_address_needs_a_token(roots):
    runs, data, reports = roots
    with pytest.raises(ConfigError, match="give --token"):
        create_app(ServeSettings(runs=runs, data=data, reports=reports, host="0.0.0.0"))
    app = create_app(ServeSettings(runs=runs, data=data, reports=reports, host="0.0.0.0", token="s3cret"))
    with TestClient(app) as c:
        r = c.get("/api/runs")
        assert r.status_code == 401 and "missing or wrong token" in r.json()["error"]
        assert c.get("/api/runs", headers={"X-Robustcars-Token": "wrong"}).status_code == 401
        assert c.get("/api/runs", headers={"X-Robustcars-Token": "s3cret"}).status_code == 200
        assert c.get("/reports/rep1/index.html").status_code == 401
        assert c.get("/runs?token=s3cret").status_code == 200  # sets the cookie for the page's requests
        assert c.get("/reports/rep1/index.html").status_code == 200


# --- in a real browser ------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server(roots):
    if not CHROMIUM:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    pytest.importorskip("playwright")
    import uvicorn

    runs, data, reports = roots
    app = create_app(ServeSettings(runs=runs, data=data, reports=reports))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=30)


@pytest.fixture
def page(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        pg = browser.new_page(viewport={"width": 1300, "height": 1000})
        pg.set_default_timeout(120_000)  # waits for real attacks and training on a machine that may be busy
        problems: list[str] = []
        pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        # the page closes its event stream itself once the job has ended: that abort is no failure
        pg.on("requestfailed", lambda r: None if r.url.endswith("/events") and r.failure == "net::ERR_ABORTED"
              else problems.append(f"failed request {r.url}: {r.failure}"))
        pg.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
        yield pg, problems
        browser.close()


def test_browser_inference_page_bars_and_live_attack(server, page, tmp_path):
    pg, problems = page
    photo = tmp_path / "car.jpg"
    photo.write_bytes(car_photo())
    pg.goto(server + "/")
    pg.wait_for_selector("#run option[value=r16]", state="attached")
    pg.select_option("#run", "r16")  # 16 classes: enough for 15 bars
    pg.set_input_files("#file", str(photo))
    pg.wait_for_selector("#bars .bar >> nth=14")
    assert pg.locator("#bars .bar").count() == 15
    pg.wait_for_selector("#attackresult:not([hidden])")
    pg.eval_on_selector("#eps", "e => { e.value = 0; e.dispatchEvent(new Event('change')); }")
    pg.wait_for_function("document.querySelector('#attackstate').textContent === 'fgsm at eps 0 (L∞)'")
    at_zero = pg.inner_text("#a_advbars")
    assert at_zero == pg.inner_text("#a_cleanbars")  # eps 0 changes nothing
    assert pg.inner_text("#a_pertcap") == "no perturbation (the attack returned the photo)"
    pg.eval_on_selector("#eps", "e => { e.value = 7; e.dispatchEvent(new Event('change')); }")
    pg.wait_for_function("document.querySelector('#attackstate').textContent === 'fgsm at eps 16/255 = 0.06275 (L∞)'")
    assert pg.inner_text("#epsval") == "16/255 = 0.06275 (L∞)"
    assert pg.inner_text("#a_advbars") != at_zero  # the adversarial prediction moved
    assert pg.inner_text("#a_pertcap").endswith("(L∞ 0.0627)")
    pg.select_option("#attack", "pgd_l2")  # an L2 attack: the slider's budgets and the caption follow its norm
    pg.wait_for_function("document.querySelector('#attackstate').textContent === 'pgd_l2 at eps 1 (L2)'")
    assert pg.inner_text("#epsval") == "1 (L2)"
    assert " (L2 " in pg.inner_text("#a_pertcap")
    pg.screenshot(path=str(ARTIFACTS / "inference.png"), full_page=True)
    _hopskipjump_runs_as_a_job(pg)
    assert not problems, problems


def _hopskipjump_runs_as_a_job(pg) -> None:
    """HopSkipJump from the page: it runs as a job (its progress on the page), a prediction meanwhile answers in
    under 5 s, and Cancel stops it."""
    pg.select_option("#attack", "hsj")
    pg.wait_for_function("document.querySelector('#attackstate').textContent.includes('running as a job')")
    assert pg.is_visible("#attackcancel")
    ms = pg.evaluate("""async () => {
        const form = new FormData();
        form.append("file", document.querySelector("#file").files[0]);
        form.append("run", "r16");
        const t0 = performance.now();
        const r = await fetch("/api/predict", {method: "POST", body: form});
        return r.ok ? performance.now() - t0 : -r.status; }""")
    assert 0 <= ms < 5000, ms
    assert "running as a job" in pg.inner_text("#attackstate")  # the job went on meanwhile
    pg.click("#attackcancel")
    pg.wait_for_function("document.querySelector('#error').textContent.startsWith('hsj cancelled after')")
    assert pg.is_hidden("#attackcancel")


def test_browser_training_job_to_runs_page(server, page, roots):
    pg, problems = page
    pg.goto(server + "/train")
    pg.fill("input[name=name]", "webjob")
    assert "cars" in pg.locator("select[name=data] option").all_inner_texts()  # the datasets under --data
    pg.select_option("select[name=data]", "cars")
    assert pg.input_value("input[name=weight_decay]") == "0.01"  # the CLI's defaults (one source)
    pg.select_option("select[name=arch]", "resnet18")
    pg.select_option("select[name=weights]", "none")
    pg.fill("input[name=epochs]", "2")
    pg.fill("input[name=img_size]", "32")
    pg.fill("input[name=batch_size]", "8")
    pg.click("#start")
    pg.wait_for_function("document.querySelector('#jobstate').textContent === 'done'", timeout=180_000)
    assert pg.inner_text("#pct") == "100 %"
    assert pg.locator("#curves polyline").count() == 3
    pg.screenshot(path=str(ARTIFACTS / "train.png"), full_page=True)
    pg.goto(server + "/runs")
    pg.wait_for_selector("#runs tbody tr")
    assert "webjob" in pg.inner_text("#runs") and "done" in pg.inner_text("#runs")
    assert "A report" in pg.inner_text("#reports")
    pg.screenshot(path=str(ARTIFACTS / "runs.png"), full_page=True)
    pg.goto(server + "/train")  # a reload shows the latest job
    pg.wait_for_function("document.querySelector('#jobname').textContent === 'webjob'")
    pg.wait_for_function("document.querySelector('#jobstate').textContent === 'done'")
    assert pg.locator("#curves .xtick").all_text_contents() == ["1", "2"]  # integer epochs
    assert pg.locator("#curves .ytick").all_text_contents() == ["0", "0.25", "0.5", "0.75", "1"]
    assert not problems, problems


def test_browser_resume_opens_the_train_page_on_its_job(server, page, roots):
    """An interrupted job's Resume button on the Runs page lands on /train showing that job."""
    pg, problems = page
    runs = roots[0]
    import httpx

    with httpx.Client(base_url=server, timeout=30) as c:
        assert c.post("/api/train", json={**TRAIN, "name": "toresume", "epochs": 300,
                                         "limit_per_class": 2}).status_code == 202
        deadline = time.time() + 120
        while time.time() < deadline and not (runs / "toresume" / "last.pt").is_file():
            time.sleep(0.2)
        assert c.post("/api/jobs/toresume/cancel").status_code == 200
        assert _wait(c, "toresume")["state"] == "cancelled"
    pg.goto(server + "/runs")
    row = pg.locator("#runs tbody tr", has_text="toresume")
    row.locator("button").click()
    pg.wait_for_url("**/train?job=toresume")
    pg.wait_for_function("document.querySelector('#jobname').textContent === 'toresume'")
    pg.wait_for_function("['running', 'done'].includes(document.querySelector('#jobstate').textContent)")
    pg.click("#cancel")
    pg.wait_for_function("document.querySelector('#jobstate').textContent === 'cancelled'")
    assert not problems, problems


WIDTHS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 900}}
DOCS_WEB = Path(__file__).resolve().parent.parent / "docs" / "web"


@pytest.mark.parametrize("width", list(WIDTHS))
def test_browser_pages_fit_phone_and_desktop_widths(server, page, tmp_path, width):
    """No horizontal overflow on any page at 390 px and 1280 px; clean and adversarial images side by side;
    the screenshots of docs/web/ are these."""
    pg, problems = page
    pg.set_viewport_size(WIDTHS[width])
    photo = tmp_path / "car.jpg"
    photo.write_bytes(car_photo())
    pg.goto(server + "/")
    pg.wait_for_selector("#run option[value=r16]", state="attached")
    pg.select_option("#run", "r16")
    pg.set_input_files("#file", str(photo))
    pg.wait_for_selector("#attackresult:not([hidden])")
    pg.wait_for_function("document.querySelector('#attackstate').textContent.startsWith('fgsm at eps')")
    clean, adv = pg.locator("#a_orig").bounding_box(), pg.locator("#a_adv").bounding_box()
    assert abs(clean["y"] - adv["y"]) < 1 and adv["x"] > clean["x"] + clean["width"] - 1  # side by side
    shots = {"/": "inference", "/train": "train", "/runs": "runs"}
    for url, name in shots.items():
        if url != "/":
            pg.goto(server + url)
            pg.wait_for_load_state("networkidle")
        overflow = pg.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{url} at {WIDTHS[width]['width']} px overflows by {overflow} px"
        if os.environ.get("ROBUSTCARS_DOCS_SCREENSHOTS"):  # refreshes docs/web/ (committed, looked at)
            pg.screenshot(path=str(DOCS_WEB / f"{name}-{WIDTHS[width]['width']}.png"), full_page=True)
    assert not problems, problems
