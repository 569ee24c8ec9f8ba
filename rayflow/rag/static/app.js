// The assistant's page: POST v1/query with stream=true and render its server-sent events as they arrive: the
// answer's pieces as the model writes them, token by token, then each revision (citations, self-critique) in its place.
// Every URL is relative, so the page works under any route prefix. Model output is shown as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let answerText = "";
let citations = [];
let passages = [];

$("token").value = localStorage.getItem("rayflow-token") || "";
$("token").addEventListener("change", () => localStorage.setItem("rayflow-token", $("token").value));
$("ask-form").addEventListener("submit", (event) => { event.preventDefault(); ask(); });
$("question").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); ask(); }
});

function headers() {
  const h = { "Content-Type": "application/json" };
  if ($("token").value) h.Authorization = "Bearer " + $("token").value;
  return h;
}

async function ask() {
  const query = $("question").value.trim();
  if (!query) return;
  answerText = ""; citations = []; passages = [];
  $("answer").textContent = ""; $("answer").dataset.pieces = 0; $("answer").dataset.revisions = 0; $("passages").textContent = ""; $("trace").textContent = "";
  $("chunk").hidden = true;
  $("ask").disabled = true;
  setStatus("thinking…");
  try {
    const response = await fetch("v1/query", {
      method: "POST", headers: headers(),
      body: JSON.stringify({ query, top_k: Number($("top-k").value) || undefined, stream: true }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error((body.error && body.error.message) || response.statusText);
    }
    await readEvents(response.body, handle);
  } catch (err) {
    setStatus(String(err.message || err), true);
  } finally {
    $("ask").disabled = false;
  }
}

// Server-sent events over a fetch body: blocks of "event: NAME\ndata: JSON" separated by a blank line.
async function readEvents(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

function handle(name, data) {
  if (name === "step") addStep(data);
  else if (name === "answer") {
    answerText += data.delta;
    $("answer").dataset.pieces = Number($("answer").dataset.pieces) + 1;  // how many pieces streamed in
    renderAnswer();
    setStatus("writing…");
  }
  else if (name === "revision") {  // citations or the self-critique changed the text: it replaces what was shown
    answerText = data.text;
    $("answer").dataset.revisions = Number($("answer").dataset.revisions || 0) + 1;
    renderAnswer();
    setStatus(data.reason === "critique" ? "revised after self-critique…" : "citing…");
  }
  else if (name === "citations") { citations = data.citations; passages = data.passages; renderAnswer(); renderPassages(); }
  else if (name === "done") setStatus(`done: ${data.route}, ${data.citations.length} citation(s)`);
  else if (name === "error") setStatus(data.error.message, true);
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function addStep(step) {
  const li = document.createElement("li");
  const detail = step.error ? ` — ${step.error}` : step.parsed === false ? " — reply unusable, default used" : "";
  li.textContent = `${step.name} (${Math.round(step.ms)} ms)${detail}`;
  if (step.error) li.className = "error"; else if (step.parsed === false) li.className = "fallback";
  li.title = JSON.stringify(step.detail, null, 1);
  $("trace").appendChild(li);
}

// The answer as text nodes, with each [n] that names a known citation turned into a link opening its chunk.
function renderAnswer() {
  const box = $("answer");
  box.textContent = "";
  const known = new Map(citations.map((c) => [c.n, c]));
  let last = 0;
  for (const match of answerText.matchAll(/\[(\d+)\]/g)) {
    const citation = known.get(Number(match[1]));
    if (!citation) continue;
    box.appendChild(document.createTextNode(answerText.slice(last, match.index)));
    const link = document.createElement("a");
    link.className = "cite";
    link.href = "#";
    link.textContent = match[0];
    link.dataset.n = citation.n;
    link.addEventListener("click", (event) => { event.preventDefault(); openChunk(citation); });
    box.appendChild(link);
    last = match.index + match[0].length;
  }
  box.appendChild(document.createTextNode(answerText.slice(last)));
}

function openChunk(citation) {
  const passage = passages.find((p) => p.chunk_id === citation.chunk_id);
  $("chunk-title").textContent = `[${citation.n}] ${citation.title || citation.doc_id} (${citation.chunk_id})`;
  $("chunk-url").textContent = citation.url || "";
  $("chunk-url").href = /^https?:\/\//.test(citation.url || "") ? citation.url : "#";
  $("chunk-text").textContent = passage ? passage.text : "";
  $("chunk").hidden = false;
  for (const li of $("passages").children) li.classList.toggle("cited", li.dataset.chunk === citation.chunk_id);
}

function renderPassages() {
  $("passages").textContent = "";
  for (const p of passages) {
    const li = document.createElement("li");
    li.dataset.chunk = p.chunk_id;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = p.score.toFixed(4) + " ";
    const title = document.createElement("strong");
    title.textContent = p.title || p.doc_id;
    li.append(score, title, document.createTextNode(" — " + p.text.slice(0, 200)));
    $("passages").appendChild(li);
  }
}
