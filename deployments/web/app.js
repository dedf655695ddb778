// Triptych's page: chat (OpenAI SSE), paint (the images SSE extension) and search (a workflow), over
// the public HTTP API of the server that sent this file. Plain JavaScript, no dependencies.
"use strict";

const KEY_STORAGE = "triptych-api-key"; // sessionStorage only: the key dies with the tab

const $ = (id) => document.getElementById(id);

// ---- HTTP ------------------------------------------------------------------------------------------

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function postJson(path, body, signal) {
  return fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...authHeaders() },
    body: JSON.stringify(body),
    signal,
  });
}

// The server's own words: "<field>: <message>" for an OpenAI-shaped error body.
function errorMessage(error) {
  if (!error || typeof error !== "object") return String(error);
  const message = error.message || JSON.stringify(error);
  return error.param ? `${error.param}: ${message}` : message;
}

async function responseError(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body.error) return errorMessage(body.error);
    if (body.detail) return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (_) {
    // not JSON: fall through to the status line
  }
  return `HTTP ${response.status} ${response.statusText}${text ? `: ${text.slice(0, 300)}` : ""}`;
}

// Parsed `data:` payloads of a server-sent-events body, until `data: [DONE]` or the end.
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// ---- small DOM helpers ---------------------------------------------------------------------------

function element(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function showError(box, message) {
  box.textContent = message;
  box.hidden = !message;
}

function formatMs(timings) {
  return Object.entries(timings || {}).map(([stage, ms]) => `${stage} ${Number(ms).toFixed(1)} ms`);
}

// One status strip: cache hit, visual tokens, token counts, per-stage timings.
function statusStrip(box, facts) {
  box.replaceChildren();
  box.dataset.cacheHit = String(Boolean(facts.cache_hit));
  const items = [
    element("span", { className: facts.cache_hit ? "hit" : "", textContent: facts.cache_hit ? "cache hit" : "cache miss" }),
  ];
  if (facts.visual_tokens_in !== undefined) {
    items.push(element("span", { textContent: `visual tokens ${facts.visual_tokens_in} in, ${facts.visual_tokens_kept} kept` }));
  }
  if (facts.prompt_tokens !== undefined) {
    items.push(element("span", { textContent: `tokens ${facts.prompt_tokens} prompt + ${facts.completion_tokens} answer` }));
  }
  if (facts.seed !== undefined) items.push(element("span", { textContent: `seed ${facts.seed}` }));
  for (const timing of formatMs(facts.timings_ms)) items.push(element("span", { textContent: timing }));
  box.append(...items);
}

// ---- API key -----------------------------------------------------------------------------------------

function setUpApiKey() {
  const field = $("api-key");
  field.value = sessionStorage.getItem(KEY_STORAGE) || "";
  field.addEventListener("input", () => {
    if (field.value) sessionStorage.setItem(KEY_STORAGE, field.value);
    else sessionStorage.removeItem(KEY_STORAGE);
  });
  field.addEventListener("change", refreshWorkflows); // with auth on, the list needs the key
}

// ---- tabs ----------------------------------------------------------------------------------------------

const PANELS = ["chat", "paint", "search"];

function selectPanel(name) {
  for (const other of PANELS) {
    $(`${other}-panel`).hidden = other !== name;
    $(`tab-${other}`).setAttribute("aria-pressed", String(other === name));
  }
}

function setUpTabs() {
  for (const name of PANELS) $(`tab-${name}`).addEventListener("click", () => selectPanel(name));
  const wanted = location.hash.slice(1);
  if (wanted === "paint") selectPanel("paint");
}

// ---- chat ------------------------------------------------------------------------------------------

const chat = {
  history: [], // OpenAI messages sent so far (user turns carry their images as data: URLs)
  attachments: [], // [{name, url}] waiting for the next message
  controller: null, // AbortController of the answer streaming now
};

async function attachFiles(files) {
  for (const file of files) {
    chat.attachments.push({ name: file.name, url: await readDataUrl(file) });
  }
  renderAttachments();
}

function renderAttachments() {
  const tray = $("attachments");
  tray.replaceChildren(...chat.attachments.map((attachment, index) => {
    const remove = element("button", { type: "button", textContent: "Remove" });
    remove.setAttribute("aria-label", `Remove ${attachment.name}`);
    remove.addEventListener("click", () => {
      chat.attachments.splice(index, 1);
      renderAttachments();
    });
    return element("li", {}, [element("img", { src: attachment.url, alt: attachment.name }), remove]);
  }));
}

function addTurn(role, text, images = []) {
  const turn = element("li", { className: `turn ${role}` }, [
    element("div", { className: "who", textContent: role === "user" ? "You" : "Triptych" }),
  ]);
  if (images.length) {
    turn.append(element("div", { className: "thumbs" },
      images.map((image) => element("img", { src: image.url, alt: `attached image ${image.name}` }))));
  }
  turn.append(element("p", { className: "text", textContent: text }));
  $("chat-log").append(turn);
  return turn;
}

function setChatBusy(busy) {
  $("chat-send").disabled = busy;
  $("chat-stop").disabled = !busy;
}

async function sendChat() {
  const input = $("chat-input");
  const text = input.value.trim();
  const images = chat.attachments;
  if (chat.controller || (!text && !images.length)) return;
  showError($("chat-error"), "");
  const content = images.map((image) => ({ type: "image_url", image_url: { url: image.url } }));
  if (text) content.push({ type: "text", text });
  chat.history.push({ role: "user", content });
  const userTurn = addTurn("user", text, images);
  chat.attachments = [];
  renderAttachments();
  input.value = "";

  const answer = addTurn("assistant", "");
  const answerText = answer.querySelector(".text");
  answer.dataset.state = "streaming";
  answer.dataset.chunks = "0";
  answer.setAttribute("aria-busy", "true");
  const panel = $("chat-panel");
  panel.dataset.sent = String(Number(panel.dataset.sent || 0) + 1); // counters a script can wait on
  chat.controller = new AbortController();
  setChatBusy(true);
  let reply = "";
  try {
    const response = await postJson("/v1/chat/completions", {
      messages: chat.history,
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: Number($("chat-max-tokens").value) || undefined,
    }, chat.controller.signal);
    if (!response.ok) {
      // Rejected before anything ran: take the turn back so the user can fix it and send again.
      const message = await responseError(response);
      chat.history.pop();
      userTurn.remove();
      answer.remove();
      chat.attachments = images;
      renderAttachments();
      input.value = text;
      showError($("chat-error"), message);
      return;
    }
    for await (const chunk of sseEvents(response)) {
      if (chunk.error) throw new Error(errorMessage(chunk.error));
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) {
        reply += delta.content;
        answerText.textContent = reply;
        answer.dataset.chunks = String(Number(answer.dataset.chunks) + 1);
      }
      if (chunk.usage) {
        const strip = element("div", { className: "status" });
        statusStrip(strip, chunk.usage);
        answer.append(strip);
      }
    }
    answer.dataset.state = "done";
  } catch (error) {
    if (error.name === "AbortError") {
      answer.dataset.state = "stopped";
    } else {
      answer.dataset.state = "error";
      showError($("chat-error"), error.message);
    }
  } finally {
    answer.setAttribute("aria-busy", "false");
    if (answer.isConnected) chat.history.push({ role: "assistant", content: reply });
    chat.controller = null;
    setChatBusy(false);
    panel.dataset.finished = String(Number(panel.dataset.finished || 0) + 1);
  }
}

function setUpChat() {
  const form = $("chat-form");
  const input = $("chat-input");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sendChat();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendChat();
    }
  });
  input.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData ? event.clipboardData.files : [])];
    if (files.length) {
      event.preventDefault();
      attachFiles(files);
    }
  });
  $("chat-images").addEventListener("change", async (event) => {
    await attachFiles([...event.target.files]);
    event.target.value = "";
  });
  const panel = $("chat-panel");
  panel.addEventListener("dragover", (event) => {
    event.preventDefault();
    form.classList.add("dragging");
  });
  panel.addEventListener("dragleave", () => form.classList.remove("dragging"));
  panel.addEventListener("drop", (event) => {
    event.preventDefault();
    form.classList.remove("dragging");
    attachFiles([...event.dataTransfer.files]);
  });
  $("chat-stop").addEventListener("click", () => chat.controller && chat.controller.abort());
  $("chat-new").addEventListener("click", () => {
    if (chat.controller) chat.controller.abort();
    chat.history = [];
    $("chat-log").replaceChildren();
    showError($("chat-error"), "");
  });
}

// ---- paint -----------------------------------------------------------------------------------------

const paint = { controller: null };

function paintBody() {
  const body = {
    prompt: $("paint-prompt").value,
    negative_prompt: $("paint-negative").value,
    steps: Number($("paint-steps").value),
    sampler: $("paint-sampler").value,
    cache_interval: Number($("paint-cache-interval").value),
    size: $("paint-size").value,
    n: 1,
    response_format: "b64_json",
    stream: true,
  };
  const seed = $("paint-seed").value;
  if (seed !== "") body.seed = Number(seed);
  return body;
}

function setPaintBusy(busy) {
  $("paint-go").disabled = busy;
  $("paint-stop").disabled = !busy;
}

async function runPaint() {
  if (paint.controller) return;
  const bar = $("paint-progress");
  const label = $("paint-progress-text");
  const panel = $("paint-panel");
  showError($("paint-error"), "");
  $("paint-result").hidden = true;
  bar.setAttribute("max", "1");
  bar.setAttribute("value", "0");
  label.textContent = "starting";
  panel.dataset.state = "running";
  paint.controller = new AbortController();
  setPaintBusy(true);
  try {
    const response = await postJson("/v1/images/generations", paintBody(), paint.controller.signal);
    if (!response.ok) throw new Error(await responseError(response));
    for await (const event of sseEvents(response)) {
      if (event.error) throw new Error(errorMessage(event.error));
      if (event.type === "image_generation.progress") {
        bar.setAttribute("max", String(event.total_steps));
        bar.setAttribute("value", String(event.step));
        label.textContent = `step ${event.step} of ${event.total_steps} (${Math.round((100 * event.step) / event.total_steps)}%)`;
      } else if (event.data) {
        const image = event.data[0];
        $("paint-image").src = `data:image/png;base64,${image.b64_json}`;
        $("paint-image").alt = `painted: ${$("paint-prompt").value}`;
        statusStrip($("paint-status"), { cache_hit: event.cache_hit, seed: image.seed, timings_ms: event.timings_ms });
        $("paint-result").hidden = false;
        label.textContent = "done";
      }
    }
    panel.dataset.state = "done";
  } catch (error) {
    if (error.name === "AbortError") {
      panel.dataset.state = "stopped";
      label.textContent = `stopped at ${label.textContent}`;
    } else {
      panel.dataset.state = "error";
      label.textContent = "";
      showError($("paint-error"), error.message);
    }
  } finally {
    paint.controller = null;
    setPaintBusy(false);
  }
}

function setUpPaint() {
  $("paint-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runPaint();
  });
  $("paint-stop").addEventListener("click", () => paint.controller && paint.controller.abort());
}

// ---- search (the image_search workflow, when the server has it) ------------------------------

function workflowNames(body) {
  const list = Array.isArray(body) ? body : (body && (body.data || body.workflows)) || [];
  if (!Array.isArray(list)) return Object.keys(list);
  return list.map((item) => (typeof item === "string" ? item : item && (item.name || item.id)));
}

async function refreshWorkflows() {
  let names = [];
  try {
    const response = await fetch("/v1/workflows", { headers: authHeaders() });
    if (response.ok) names = workflowNames(await response.json());
  } catch (_) {
    // no workflows API: the panel stays hidden
  }
  const available = names.includes("image_search");
  $("tab-search").hidden = !available;
  document.body.dataset.workflows = "checked";
  if (available && location.hash === "#search") selectPanel("search");
  if (!available && !$("search-panel").hidden) selectPanel("chat");
}

async function runSearch() {
  const files = [...$("search-images").files];
  const results = $("search-results");
  showError($("search-error"), "");
  results.replaceChildren();
  $("search-go").disabled = true;
  try {
    const images = await Promise.all(files.map(readDataUrl));
    const response = await postJson("/v1/workflows/image_search", {
      inputs: { query: $("search-query").value, images },
    });
    if (!response.ok) throw new Error(await responseError(response));
    const { outputs } = await response.json();
    results.replaceChildren(...outputs.ranking.map((index, rank) => element("li", {}, [
      element("img", { src: images[index], alt: files[index].name }),
      element("div", { className: "status", textContent: `#${rank + 1} ${files[index].name}, score ${Number(outputs.scores[index]).toFixed(3)}` }),
    ])));
  } catch (error) {
    showError($("search-error"), error.message);
  } finally {
    $("search-go").disabled = false;
  }
}

function setUpSearch() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch();
  });
}

// ---- keyboard: Esc stops whatever is running -----------------------------------------------------

document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  if (chat.controller) chat.controller.abort();
  if (paint.controller) paint.controller.abort();
});

setUpApiKey();
setUpTabs();
setUpChat();
setUpPaint();
setUpSearch();
refreshWorkflows();
