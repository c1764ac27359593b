// robustcars web app: plain JavaScript, no framework, no CDN.
"use strict";
const params = new URLSearchParams(location.search);
if (params.get("token")) sessionStorage.setItem("robustcars-token", params.get("token"));
const TOKEN = sessionStorage.getItem("robustcars-token") || "";
const $ = (id) => document.getElementById(id);

function showError(msg) { const e = $("error"); e.textContent = msg; e.hidden = !msg; }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {}, TOKEN ? {"X-Robustcars-Token": TOKEN} : {});
  const r = await fetch(path, Object.assign({}, options, {headers}));
  let body = null;
  try { body = await r.json(); } catch (e) { body = {error: `HTTP ${r.status}`}; }
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

function bars(el, topk) {
  el.innerHTML = "";
  for (const t of topk) {
    const d = document.createElement("div");
    d.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${(100 * t.probability).toFixed(1)}%`;
    const label = document.createElement("b");
    label.textContent = `${t.name}  ${t.probability.toFixed(3)}`;
    d.append(fill, label);
    el.append(d);
  }
}

async function fillRuns(select) {
  const {runs} = await api("/api/runs");
  select.innerHTML = "";
  for (const r of runs.filter((r) => r.trained)) {
    const o = document.createElement("option");
    o.value = r.name;
    o.textContent = `${r.name} (${r.arch}, ${r.test_accuracy == null ? "?" : (100 * r.test_accuracy).toFixed(1) + " %"})`;
    select.append(o);
  }
  if (!select.options.length) showError("No trained run in the runs folder yet: train one on the Train page.");
}

function inferencePage() {
  let file = null, attackSeq = 0;
  // the slider's budgets follow the chosen attack's norm (robustcars.registry.EPS_GRID): L∞ in k/255, L2 its own
  const NORMS = JSON.parse($("eps").dataset.norms), GRID = JSON.parse($("eps").dataset.grid);
  const normOf = () => NORMS[$("attack").value] || "linf";
  const epsNow = () => GRID[normOf()][+$("eps").value];
  const epsText = (e, norm) => norm === "linf"
    ? (e === 0 ? "0 (L∞)" : `${+(e * 255).toFixed(2)}/255 = ${+e.toFixed(5)} (L∞)`) : `${e} (L2)`;
  const epsOut = () => {
    $("eps").max = GRID[normOf()].length - 1;
    $("epsval").textContent = epsText(epsNow(), normOf());
  };
  epsOut();
  fillRuns($("run")).catch((e) => showError(e.message));

  async function predictNow() {
    if (!file) return;
    showError("");
    const form = new FormData();
    form.append("file", file);
    form.append("run", $("run").value);
    form.append("cam", $("cam").checked);
    form.append("prefilter", $("prefilter").checked);
    try {
      const r = await api("/api/predict", {method: "POST", body: form});
      $("result").hidden = false;
      $("photo").src = r.image;
      $("camfig").hidden = !r.cam;
      if (r.cam) $("camimg").src = r.cam;
      $("entropy").textContent = `entropy ${r.entropy_nats.toFixed(3)} nats`;
      bars($("bars"), r.top_k);
      $("verdict").textContent = r.prefilter ? (r.prefilter.is_car ? `A car (car probability ${r.prefilter.car_probability.toFixed(3)}).`
        : `Not a car? ImageNet sees: ${r.prefilter.imagenet_top5.map((t) => t[0]).join(", ")}`) : "";
      attackNow();
    } catch (e) { showError(e.message); }
  }

  async function attackNow() {
    if (!file) return;
    const seq = ++attackSeq, eps = epsNow();
    epsOut();
    $("attackstate").textContent = `attacking at eps ${eps}…`;
    const form = new FormData();
    form.append("file", file);
    form.append("run", $("run").value);
    form.append("attack", $("attack").value);
    form.append("eps", eps);
    form.append("top_k", "3");
    try {
      const r = await api("/api/attack", {method: "POST", body: form});
      if (seq !== attackSeq) return;  // a newer slider position is on its way
      $("attackresult").hidden = false;
      $("a_orig").src = r.image; $("a_pert").src = r.perturbation; $("a_adv").src = r.adversarial;
      $("a_cam").src = r.cam; $("a_advcam").src = r.adversarial_cam;
      $("a_pertcap").textContent = r.magnification == null ? "no perturbation (the attack returned the photo)"
        : `perturbation ×${r.magnification} (${r.norm === "l2" ? "L2 " + r.l2.toFixed(4) : "L∞ " + r.linf.toFixed(4)})`;
      $("a_advcap").textContent = `adversarial: ${r.adversarial_prediction.top_k[0].name}`;
      const s = r.attention_shift;
      $("a_shift").textContent = s.pearson == null ? "Grad-CAM adversarial" : `Grad-CAM adversarial (r = ${s.pearson.toFixed(2)})`;
      $("a_fooled").textContent = r.fooled ? "— fooled" : "— held";
      $("a_fooled").className = r.fooled ? "fooled" : "held";
      bars($("a_cleanbars"), r.clean.top_k);
      bars($("a_advbars"), r.adversarial_prediction.top_k);
      const t = $("a_ranks");
      t.innerHTML = "<tr><th>clean top-3 class</th><th>clean</th><th>adversarial</th></tr>";
      for (const c of r.clean_top3_rank_change) {
        const row = t.insertRow();
        row.insertCell().textContent = c.name;
        row.insertCell().textContent = c.clean_rank;
        row.insertCell().textContent = c.adversarial_rank;
      }
      $("attackstate").textContent = `${r.attack} at eps ${r.eps} (${r.norm})`;
    } catch (e) { if (seq === attackSeq) { $("attackstate").textContent = ""; showError(e.message); } }
  }

  $("file").addEventListener("change", (e) => { file = e.target.files[0]; predictNow(); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); file = e.dataTransfer.files[0]; predictNow(); });
  for (const id of ["run", "cam", "prefilter"]) $(id).addEventListener("change", predictNow);
  $("eps").addEventListener("input", epsOut);
  $("eps").addEventListener("change", attackNow);
  $("attack").addEventListener("change", () => { epsOut(); attackNow(); });
}

function curves(svg, history) {
  const W = 420, H = 220, P = 30;
  const n = Math.max(history.length, 2);
  const x = (i) => P + (i * (W - 2 * P)) / (n - 1), y = (v) => H - P - v * (H - 2 * P);
  const line = (key, color) => `<polyline fill="none" stroke="${color}" stroke-width="2" points="${history
    .map((h, i) => `${x(i).toFixed(1)},${y(h[key]).toFixed(1)}`).join(" ")}"/>`;
  svg.innerHTML = `<rect x="${P}" y="${P}" width="${W - 2 * P}" height="${H - 2 * P}" fill="#fff" stroke="#ddd"/>` +
    `<text x="4" y="${P + 4}" font-size="10">1.0</text><text x="4" y="${H - P}" font-size="10">0</text>` +
    `<text x="${W / 2 - 15}" y="${H - 8}" font-size="10">epoch</text>` +
    (history.length ? line("train_acc", "#2563eb") + line("val_acc", "#dc2626") + line("val_f1", "#9ca3af") : "");
}

function trainPage() {
  let source = null, jobId = null;
  function watch(id) {
    jobId = id;
    $("job").hidden = false;
    $("jobname").textContent = id;
    $("cancel").disabled = false;
    $("start").disabled = true;
    const url = `/api/jobs/${encodeURIComponent(id)}/events` + (TOKEN ? `?token=${encodeURIComponent(TOKEN)}` : "");
    source = new EventSource(url);
    source.onmessage = (e) => {
      const s = JSON.parse(e.data);
      $("jobstate").textContent = s.state;
      $("bar").style.width = `${(100 * s.progress).toFixed(1)}%`;
      $("pct").textContent = `${(100 * s.progress).toFixed(0)} %`;
      $("log").textContent = s.log.join("\n");
      $("log").scrollTop = $("log").scrollHeight;
      curves($("curves"), s.history);
    };
    source.addEventListener("end", () => {
      source.close();
      $("cancel").disabled = true;
      $("start").disabled = false;
    });
  }
  $("trainform").addEventListener("submit", async (e) => {
    e.preventDefault();
    showError("");
    const f = new FormData(e.target), body = {};
    for (const [k, v] of f.entries()) {
      const field = e.target.elements[k];
      if (v !== "") body[k] = field.tagName === "SELECT" || field.type !== "number" ? v : Number(v);
    }
    try {
      const r = await api("/api/train", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
      watch(r.job);
    } catch (err) { showError(err.message); }
  });
  $("cancel").addEventListener("click", async () => {
    try { await api(`/api/jobs/${encodeURIComponent(jobId)}/cancel`, {method: "POST"}); } catch (err) { showError(err.message); }
  });
  curves($("curves"), []);
}

async function runsPage() {
  try {
    const {runs} = await api("/api/runs");
    const body = document.querySelector("#runs tbody");
    for (const r of runs) {
      const row = body.insertRow();
      const pct = (v) => (v == null ? "–" : v.toFixed(4));
      for (const v of [r.name, r.arch || "–", r.img_size || "–", pct(r.test_accuracy), pct(r.test_macro_f1)]) row.insertCell().textContent = v;
      row.insertCell().textContent = r.attacks.map((a) => `${a.label}: ` + Object.entries(a.robust_accuracy)
        .map(([e, acc]) => `${e} → ${acc.toFixed(3)}`).join(", ")).join("; ") || "–";
      const jobCell = row.insertCell();
      jobCell.textContent = r.job ? r.job.state : "–";
      if (r.job && ["interrupted", "cancelled", "failed"].includes(r.job.state)) {
        const b = document.createElement("button");
        b.textContent = "resume";
        b.onclick = async () => { try { await api(`/api/jobs/${encodeURIComponent(r.job.id)}/resume`, {method: "POST"}); location.href = "/train"; } catch (e) { showError(e.message); } };
        jobCell.append(" ", b);
      }
    }
    const {reports} = await api("/api/reports");
    for (const rep of reports) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = rep.url;
      a.textContent = rep.title;
      li.append(a, ` (${rep.models} model(s), ${rep.created || ""})`);
      $("reports").append(li);
    }
    if (!reports.length) $("reports").innerHTML = "<li class='muted'>none yet: robustcars report … --out REPORTS/NAME</li>";
  } catch (e) { showError(e.message); }
}
