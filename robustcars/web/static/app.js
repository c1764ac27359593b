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

  let job = null;  // the running attack job (a long attack: C&W, HopSkipJump, AutoAttack, many steps)
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const jobUrl = (j, tail = "") => `/api/attack-jobs/${encodeURIComponent(j.job)}${tail}`;

  async function postAttack(form) {
    for (let i = 0; ; i++) {  // a job cancelled a moment ago may still be stopping: 409 for a few hundred ms
      try { return await api("/api/attack", {method: "POST", body: form}); } catch (e) {
        if (!/still running/.test(e.message) || i >= 20) throw e;
        await sleep(250);
      }
    }
  }

  async function follow(j, seq) {
    job = j;
    $("attackcancel").hidden = false;
    try {
      while (j.state === "running") {
        if (seq !== attackSeq) return null;
        $("attackstate").textContent = `${j.attack} at eps ${epsText(j.eps, NORMS[j.attack])} running as a job: ${j.model_calls} model calls, ` +
          `${Math.round(j.seconds)} s (stops at ${j.limit_seconds} s)…`;
        await sleep(500);
        j = await api(jobUrl(j));
      }
    } finally { if (job && job.job === j.job) { job = null; $("attackcancel").hidden = true; } }
    if (j.state === "done") return j.result;
    throw new Error(j.state === "cancelled" ? `${j.attack} cancelled after ${Math.round(j.seconds)} s` : j.error);
  }

  function showAttack(r) {
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
    $("attackstate").textContent = `${r.attack} at eps ${epsText(r.eps, r.norm)}`;
  }

  async function attackNow() {
    if (!file) return;
    const seq = ++attackSeq, eps = epsNow();
    epsOut();
    if (job) api(jobUrl(job, "/cancel"), {method: "POST"}).catch(() => {});  // a newer request replaces it
    $("attackstate").textContent = `attacking at eps ${epsText(eps, normOf())}…`;
    const form = new FormData();
    form.append("file", file);
    form.append("run", $("run").value);
    form.append("attack", $("attack").value);
    form.append("eps", eps);
    form.append("top_k", "3");
    try {
      let r = await postAttack(form);
      if (r.job) r = await follow(r, seq);
      if (r === null || seq !== attackSeq) return;  // a newer slider position is on its way
      showAttack(r);
    } catch (e) { if (seq === attackSeq) { $("attackstate").textContent = ""; showError(e.message); } }
  }

  $("attackcancel").addEventListener("click", () => {
    if (job) api(jobUrl(job, "/cancel"), {method: "POST"}).catch((e) => showError(e.message));
  });
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
  // accuracy-type values in [0, 1] per epoch: a line and a dot per epoch (one epoch is a dot), ticks labelled
  const W = 420, H = 220, L = 36, R = 12, T = 12, B = 34;
  const n = history.length, last = Math.max(n, 2);
  const x = (i) => L + (i * (W - L - R)) / (last - 1), y = (v) => H - B - v * (H - T - B);
  const step = Math.max(1, Math.ceil(n / 10));
  let axes = `<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="#fff" stroke="#ddd"/>`;
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    axes += `<line x1="${L - 4}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" stroke="#eee"/>` +
      `<text class="ytick" x="${L - 6}" y="${y(v) + 3}" font-size="10" text-anchor="end">${v}</text>`;
  }
  for (let i = 0; i < n; i += step) {
    axes += `<text class="xtick" x="${x(i)}" y="${H - B + 13}" font-size="10" text-anchor="middle">${i + 1}</text>`;
  }
  axes += `<text x="${(L + W - R) / 2}" y="${H - 4}" font-size="10" text-anchor="middle">epoch</text>`;
  const line = (key, color) => `<polyline fill="none" stroke="${color}" stroke-width="2" points="${history
    .map((h, i) => `${x(i).toFixed(1)},${y(h[key]).toFixed(1)}`).join(" ")}"/>` + history
    .map((h, i) => `<circle cx="${x(i).toFixed(1)}" cy="${y(h[key]).toFixed(1)}" r="3" fill="${color}"/>`).join("");
  svg.innerHTML = axes + (n ? line("train_acc", "#2563eb") + line("val_acc", "#dc2626") + line("val_f1", "#9ca3af") : "");
}

function trainPage() {
  let source = null, jobId = null;
  function watch(id) {
    if (source) source.close();
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
  // the page shows a job on load: the one named in ?job= (Resume on the Runs page), else the running or newest
  api("/api/jobs").then(({jobs}) => {
    const wanted = params.get("job");
    const shown = wanted ? jobs.find((j) => j.id === wanted) : jobs[0];
    if (shown) watch(shown.id);
  }).catch((e) => showError(e.message));
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
        b.onclick = async () => {
          try {
            await api(`/api/jobs/${encodeURIComponent(r.job.id)}/resume`, {method: "POST"});
            location.href = `/train?job=${encodeURIComponent(r.job.id)}`;
          } catch (e) { showError(e.message); }
        };
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
