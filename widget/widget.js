/*! Romega Chatbot website widget: one script tag puts the chatbot on a site.
 *
 *   <script src="https://<chat-url>/widget.js" async data-title="..."></script>
 *
 * Served as-is by the chat function (GET /widget.js); there is no build step. It renders a
 * launcher and a chat panel inside an open Shadow DOM, streams answers from POST /chat
 * (fetch + an SSE reader: EventSource cannot POST), keeps the conversation in sessionStorage
 * and talks to nothing but its API base. Untrusted text (answers, titles, errors) only ever
 * becomes text nodes or a checked http(s) href: no string is ever parsed as HTML.
 * docs/architecture.md, "The website widget", says more.
 */
(() => {
  "use strict";
  const script = document.currentScript;
  if (!script || window.romegaChatWidget) return; // one widget per page
  window.romegaChatWidget = true;

  const SVG = "http://www.w3.org/2000/svg";
  const ICONS = {
    chat: "M20 2H4a2 2 0 0 0-2 2v18l4-4h14a2 2 0 0 0 2-2V4a2 2 0 0 0-2-2zM6 9h12v2H6zm8 5H6v-2h8zm4-6H6V6h12z",
    close: "M19 6.41 17.59 5 12 10.59 6.41 5 5 6.41 10.59 12 5 17.59 6.41 19 12 13.41 17.59 19 19 17.59 13.41 12z",
    send: "M2.01 21 23 12 2.01 3 2 10l15 2-15 2z",
    restart: "M17.65 6.35A7.96 7.96 0 0 0 12 4a8 8 0 1 0 7.73 10h-2.08A6 6 0 1 1 12 6c1.66 0 3.14.69 4.22 1.78L13 11h7V4z",
    up: "M1 21h4V9H1zm22-11a2 2 0 0 0-2-2h-6.31l.95-4.57.03-.32c0-.41-.17-.79-.44-1.06L14.17 1 7.59 7.59C7.22 7.95 7 8.45 7 9v10a2 2 0 0 0 2 2h9c.83 0 1.54-.5 1.84-1.22l3.02-7.05c.09-.23.14-.47.14-.73z",
    down: "M15 3H6c-.83 0-1.54.5-1.84 1.22l-3.02 7.05c-.09.23-.14.47-.14.73v2a2 2 0 0 0 2 2h6.31l-.95 4.57-.03.32c0 .41.17.79.44 1.06L9.83 23l6.59-6.59c.36-.36.58-.86.58-1.41V5a2 2 0 0 0-2-2zm4 0v12h4V3z",
  };
  // The chat function's defaults (MAX_HISTORY_MESSAGES, MAX_HISTORY_CHARS, MAX_MESSAGE_CHARS).
  const MAX_HISTORY = 6;
  const MAX_HISTORY_CHARS = 8000;
  const MAX_CHARS = 2000;

  /** An absolute http(s) URL, normalised, or null: no other scheme is ever linked or called. */
  const httpUrl = (value) => {
    try {
      const url = new URL(value);
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch {
      return null;
    }
  };
  const setting = (value, fallback, max) => (value || "").trim().slice(0, max) || fallback;

  const data = script.dataset;
  const config = {
    api: (httpUrl(data.api) || new URL(script.src, location.href).origin).replace(/\/+$/, ""),
    title: setting(data.title, "Romega Assistant", 60),
    greeting: setting(
      data.greeting,
      "Hi! Ask me anything about Romega Solutions: our services, prices, offices or careers.",
      400,
    ),
    accent: /^#([0-9a-f]{3}){1,2}$/i.test(data.accent || "") ? data.accent : "#0f6e73",
    side: data.position === "left" ? "left" : "right",
    suggestions: (data.suggestions || "")
      .split("|")
      .map((s) => s.trim().slice(0, 120))
      .filter(Boolean)
      .slice(0, 4),
  };

  /** Black or white, whichever reads better on ``hex`` (WCAG relative luminance). */
  const onAccent = (hex) => {
    const full = hex.length === 4 ? hex.replace(/\w/g, "$&$&") : hex;
    const [r, g, b] = [1, 3, 5].map((i) => {
      const c = parseInt(full.slice(i, i + 2), 16) / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    const luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    return (luminance + 0.05) / 0.05 > 1.05 / (luminance + 0.05) ? "#111418" : "#ffffff";
  };

  const CSS = `
:host{all:initial!important;display:block!important;position:static!important}
*{box-sizing:border-box;margin:0;padding:0}
.root{--accent:${config.accent};--on-accent:${onAccent(config.accent)};--bg:#fff;--surface:#f3f5f7;
--text:#1b2126;--muted:#57606a;--line:#d5dbe1;--focus:#1a5fb4;--shadow:0 12px 40px rgba(15,23,42,.22);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--text);text-align:left;letter-spacing:normal;-webkit-font-smoothing:antialiased}
@media (prefers-color-scheme:dark){.root{--bg:#15191e;--surface:#232a31;--text:#e8ecef;--muted:#aab4be;
--line:#3a444e;--focus:#8ab4f8;--shadow:0 12px 40px rgba(0,0,0,.6)}}
button,textarea{font:inherit;color:inherit;background:none;border:0}
button{cursor:pointer}
:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
.launcher{position:fixed;bottom:20px;${config.side}:20px;z-index:2147483000;width:60px;height:60px;
border-radius:50%;background:var(--accent);color:var(--on-accent);display:grid;place-items:center;
box-shadow:var(--shadow);transition:transform .15s ease}
.launcher:hover{transform:scale(1.06)}
.panel{position:fixed;bottom:92px;${config.side}:20px;z-index:2147483000;width:380px;
height:min(620px,calc(100vh - 112px));display:flex;flex-direction:column;background:var(--bg);
border:1px solid var(--line);border-radius:16px;box-shadow:var(--shadow);overflow:hidden;
animation:rise .18s ease-out}
.panel[hidden]{display:none}
@keyframes rise{from{opacity:0;transform:translateY(12px)}to{opacity:1;transform:none}}
header{display:flex;align-items:center;gap:8px;padding:14px 12px 14px 18px;background:var(--accent);
color:var(--on-accent)}
h2{flex:1;font-size:17px;font-weight:650;line-height:1.3}
header p{font-size:12.5px;opacity:.92;font-weight:400}
.icon{width:38px;height:38px;border-radius:10px;display:grid;place-items:center;flex:none}
.icon:hover{background:rgba(127,127,127,.22)}
header :focus-visible{outline-color:var(--on-accent);outline-offset:-3px}
.log{flex:1;overflow-y:auto;padding:16px;display:flex;flex-direction:column;gap:12px;
overscroll-behavior:contain}
.msg{max-width:88%;padding:10px 14px;border-radius:14px;overflow-wrap:anywhere;white-space:normal}
.user{align-self:flex-end;background:var(--accent);color:var(--on-accent);border-bottom-right-radius:4px;
white-space:pre-wrap}
.bot{align-self:flex-start;background:var(--surface);border-bottom-left-radius:4px}
.bot p+p,.bot p+ul,.bot p+ol,.bot ul+p,.bot ol+p{margin-top:8px}
.bot ul,.bot ol{padding-left:20px}
.bot a,.sources a{color:inherit;text-decoration:underline;text-underline-offset:2px;font-weight:600}
.bot .sources{display:flex;flex-wrap:wrap;gap:6px;list-style:none;margin-bottom:8px;padding:0}
.sources li{font-size:12.5px;border:1px solid var(--line);border-radius:999px;padding:2px 10px;
background:var(--bg)}
.label{font-size:12px;color:var(--muted);margin-bottom:4px}
.rate{display:flex;align-items:center;gap:4px;margin-top:8px;color:var(--muted);font-size:12.5px}
.rate button{width:32px;height:32px;border-radius:8px;display:grid;place-items:center}
.rate button:hover{background:rgba(127,127,127,.18)}
.rate button[aria-pressed=true]{color:var(--accent);background:rgba(127,127,127,.18)}
@media (prefers-color-scheme:dark){.rate button[aria-pressed=true]{color:var(--text)}}
.error{border:1px solid #b42318;background:var(--bg)}
.error button{margin-top:8px;padding:6px 14px;border-radius:8px;background:var(--accent);
color:var(--on-accent);font-weight:600}
.error button[aria-disabled=true]{opacity:.6;cursor:default}
.typing{display:flex;gap:5px;padding:14px}
.typing i{width:8px;height:8px;border-radius:50%;background:var(--muted);animation:blink 1.2s infinite}
.typing i:nth-child(2){animation-delay:.2s}.typing i:nth-child(3){animation-delay:.4s}
@keyframes blink{0%,80%,100%{opacity:.3}40%{opacity:1}}
.chips{display:flex;flex-direction:column;align-items:flex-start;gap:8px}
.chips button{border:1px solid var(--accent);border-radius:999px;padding:6px 14px;font-size:14px;
text-align:left;background:var(--bg)}
@media (prefers-color-scheme:dark){.chips button{border-color:var(--line)}}
.chips button:hover{background:var(--surface)}
form{display:flex;align-items:flex-end;gap:8px;padding:10px 12px;border-top:1px solid var(--line)}
textarea{flex:1;resize:none;min-height:42px;max-height:120px;padding:10px 12px;border:1px solid var(--line);
border-radius:12px;background:var(--bg);line-height:1.4}
textarea::placeholder{color:var(--muted);opacity:1}
.send{width:42px;height:42px;border-radius:12px;background:var(--accent);color:var(--on-accent);
display:grid;place-items:center;flex:none}
.send[aria-disabled=true]{opacity:.55;cursor:default}
.note{font-size:11.5px;color:var(--muted);text-align:center;padding:0 12px 10px}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
@media (max-width:480px){.panel{inset:0;width:100%;height:100%;border-radius:0;border:0}}
@media (prefers-reduced-motion:reduce){*{animation:none!important;transition:none!important}}`;

  /** An element with attributes, listeners (``onclick``) and children (strings become text). */
  const h = (tag, props = {}, ...children) => {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "text") el.textContent = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (value !== false && value != null) el.setAttribute(key, value === true ? "" : value);
    }
    el.append(...children.filter((c) => c != null));
    return el;
  };
  const icon = (name, size = 20) => {
    const svg = document.createElementNS(SVG, "svg");
    const path = document.createElementNS(SVG, "path");
    for (const [k, v] of [["viewBox", "0 0 24 24"], ["width", size], ["height", size],
      ["aria-hidden", "true"], ["focusable", "false"]]) svg.setAttribute(k, v);
    path.setAttribute("d", ICONS[name]);
    path.setAttribute("fill", "currentColor");
    svg.append(path);
    return svg;
  };

  // --- the tiny Markdown subset: paragraphs, lists, **bold**, [links](http(s) only) ---------
  const INLINE = /\*\*([^*\n]+)\*\*|\[([^\]\n]+)\]\(([^()\s]+)\)/g;
  const inline = (parent, text) => {
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      parent.append(text.slice(last, m.index));
      const url = m[3] && httpUrl(m[3]);
      if (m[1]) parent.append(h("strong", { text: m[1] }));
      else if (url) parent.append(link(url, m[2]));
      else parent.append(m[0]);
      last = m.index + m[0].length;
    }
    parent.append(text.slice(last));
  };
  const link = (url, text) =>
    h("a", { href: url, target: "_blank", rel: "noopener noreferrer nofollow", text });
  const markdown = (text) => {
    const out = document.createDocumentFragment();
    let list = null;
    let para = null;
    for (const line of text.split("\n").map((l) => l.trim())) {
      const item = /^(?:[-*\u2022]|(\d{1,3})[.)])\s+(.*)$/.exec(line);
      if (!line) {
        list = para = null;
      } else if (item) {
        const tag = item[1] ? "OL" : "UL";
        if (!list || list.tagName !== tag) out.append((list = h(tag.toLowerCase())));
        const li = h("li");
        inline(li, item[2]);
        list.append(li);
        para = null;
      } else {
        if (para) para.append(h("br"));
        else out.append((para = h("p")));
        inline(para, line);
        list = null;
      }
    }
    return out;
  };

  // --- conversation state, kept in this tab's sessionStorage ----------------------------------
  const KEY = `romega-chat:${config.api}`;
  const validTurn = (t) =>
    t && (t.role === "user" || t.role === "assistant") && typeof t.content === "string";
  const load = () => {
    try {
      const saved = JSON.parse(sessionStorage.getItem(KEY) || "{}");
      return { open: saved.open === true, turns: (saved.turns || []).filter(validTurn) };
    } catch {
      return { open: false, turns: [] };
    }
  };
  const state = load();
  const save = () => {
    try {
      sessionStorage.setItem(KEY, JSON.stringify(state));
    } catch {
      /* storage full or disabled: the conversation lives until the page goes */
    }
  };
  /** The latest turns the chat function accepts as ``history``, oldest first. */
  const history = () => {
    const out = [];
    let chars = 0;
    for (const turn of state.turns.slice().reverse()) {
      const content = turn.content.slice(0, MAX_CHARS);
      if (!content.trim()) continue;
      if (out.length === MAX_HISTORY || chars + content.length > MAX_HISTORY_CHARS) break;
      chars += content.length;
      out.unshift({ role: turn.role, content });
    }
    return out;
  };

  // --- talking to the chat API --------------------------------------------------------------
  const post = (path, body, signal) =>
    fetch(config.api + path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
      signal,
    });
  /** One Server-Sent Event block -> {name, data} (data parsed as JSON), or null. */
  const parseEvent = (block) => {
    let name = "message";
    const lines = [];
    for (const line of block.split(/\r?\n/)) {
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") name = value;
      else if (field === "data") lines.push(value);
    }
    try {
      return lines.length ? { name, data: JSON.parse(lines.join("\n")) } : null;
    } catch {
      return null;
    }
  };
  async function* events(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value, { stream: !done });
      const blocks = buffer.split(/\r?\n\r?\n/);
      buffer = done ? "" : blocks.pop();
      for (const block of blocks) {
        const event = parseEvent(block);
        if (event) yield event;
      }
      if (done) return;
    }
  }
  /** What to tell the visitor about a refused request: a message, a wait, whether to retry. */
  const refusal = async (response) => {
    if (response.status === 429) {
      const wait = parseInt(response.headers.get("Retry-After") || "", 10);
      return {
        text: "You're sending questions faster than I can answer.",
        wait: Number.isFinite(wait) && wait > 0 ? Math.min(wait, 3600) : 30,
      };
    }
    if (response.status >= 400 && response.status < 500) {
      const body = await response.json().catch(() => ({}));
      const reason = typeof body.error === "string" ? ` (${body.error.slice(0, 200)})` : "";
      return { text: `I couldn't take that question${reason}.`, final: true };
    }
    return { text: "The assistant is unavailable right now. Please try again in a moment." };
  };

  // --- the interface ------------------------------------------------------------------------
  const host = document.createElement("romega-chat");
  const shadow = host.attachShadow({ mode: "open" });
  if (shadow.adoptedStyleSheets && window.CSSStyleSheet && "replaceSync" in CSSStyleSheet.prototype) {
    const sheet = new CSSStyleSheet(); // not an inline <style>: a host's style-src CSP allows it
    sheet.replaceSync(CSS);
    shadow.adoptedStyleSheets = [sheet];
  } else {
    shadow.append(h("style", { text: CSS }));
  }
  const ids = { panel: "romega-chat-panel", title: "romega-chat-title" };
  const launcher = h("button", {
    class: "launcher",
    type: "button",
    "aria-label": `Open chat: ${config.title}`,
    "aria-expanded": "false",
    "aria-controls": ids.panel,
    onclick: () => (panel.hidden ? open() : close()),
  }, icon("chat", 28));
  const log = h("div", { class: "log", role: "log", "aria-live": "off", "aria-label": "Conversation", tabindex: "0" });
  const announcer = h("div", { class: "sr", role: "status", "aria-live": "polite" });
  const input = h("textarea", {
    rows: "1",
    maxlength: String(MAX_CHARS),
    placeholder: "Ask a question…",
    "aria-label": "Your question",
    onkeydown: (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        submit();
      }
    },
    oninput: () => {
      input.style.height = "auto";
      input.style.height = `${Math.min(input.scrollHeight + 2, 120)}px`;
      sync();
    },
  });
  const sendButton = h("button", { class: "send", type: "submit", "aria-label": "Send" }, icon("send"));
  const form = h("form", { onsubmit: (e) => (e.preventDefault(), submit()) }, input, sendButton);
  const panel = h(
    "section",
    { class: "panel", id: ids.panel, role: "dialog", "aria-labelledby": ids.title, hidden: true,
      onkeydown: (e) => e.key === "Escape" && (e.stopPropagation(), close()) },
    h(
      "header",
      {},
      h("div", {}, h("h2", { id: ids.title, text: config.title }),
        h("p", { text: "Answers from Romega's own documents" })),
      h("button", { class: "icon", type: "button", "aria-label": "New conversation", title: "New conversation",
        onclick: restart }, icon("restart")),
      h("button", { class: "icon", type: "button", "aria-label": "Close chat", title: "Close", onclick: close },
        icon("close", 22)),
    ),
    log,
    form,
    h("p", { class: "note", text: "AI answers can be wrong: check the linked sources." }),
    announcer,
  );
  const root = h("div", { class: "root" }, launcher, panel);
  shadow.append(root);

  let busy = false; // a question is being answered
  let waitUntil = 0; // after a 429: no new question before this time (ms)
  let controller = null;

  const sync = () => {
    const blocked = busy || Date.now() < waitUntil || !input.value.trim();
    sendButton.setAttribute("aria-disabled", String(blocked));
  };
  const announce = (text) => {
    announcer.textContent = "";
    setTimeout(() => (announcer.textContent = text), 50); // a change, so it is read again
  };
  const nearBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  const show = (node) => {
    const follow = nearBottom();
    log.append(node);
    if (follow) log.scrollTop = log.scrollHeight;
    return node;
  };

  function open(focus = true) {
    panel.hidden = false;
    launcher.setAttribute("aria-expanded", "true");
    launcher.setAttribute("aria-label", `Close chat: ${config.title}`);
    state.open = true;
    save();
    log.scrollTop = log.scrollHeight;
    if (focus) input.focus();
  }
  function close() {
    panel.hidden = true;
    launcher.setAttribute("aria-expanded", "false");
    launcher.setAttribute("aria-label", `Open chat: ${config.title}`);
    state.open = false;
    save();
    launcher.focus();
  }
  function restart() {
    if (controller) controller.abort();
    state.turns = [];
    save();
    render();
    announce("New conversation started.");
    input.focus();
  }

  const greeting = () => {
    const chips = config.suggestions.map((q) =>
      h("button", { type: "button", text: q, onclick: () => ask(q) }));
    return [
      h("div", { class: "msg bot" }, markdown(config.greeting)),
      state.turns.length || !chips.length
        ? null
        : h("div", { class: "chips", role: "group", "aria-label": "Suggested questions" }, ...chips),
    ];
  };
  const sourceList = (sources) => {
    const items = sources.slice(0, 5).map((s) => {
      const name = String(s.title || s.source || "Source").slice(0, 120);
      const url = typeof s.url === "string" && httpUrl(s.url);
      return h("li", {}, url ? link(url, name) : name);
    });
    return items.length
      ? [h("p", { class: "label", text: "Sources" }), h("ul", { class: "sources" }, ...items)]
      : [];
  };
  const rating = (turn) => {
    const note = h("span", { "aria-live": "polite" });
    const buttons = ["up", "down"].map((value) =>
      h("button", {
        type: "button",
        "aria-label": value === "up" ? "Helpful" : "Not helpful",
        title: value === "up" ? "Helpful" : "Not helpful",
        "aria-pressed": String(turn.rating === value),
        onclick: () => rate(turn, value, buttons, note),
      }, icon(value, 18)));
    if (turn.rating) note.textContent = "Thanks for your feedback!";
    return h("div", { class: "rate" }, ...buttons, note);
  };
  async function rate(turn, value, buttons, note) {
    if (turn.rating || !turn.answer_id) return;
    turn.rating = value;
    buttons.forEach((b, i) => b.setAttribute("aria-pressed", String(["up", "down"][i] === value)));
    try {
      const response = await post("/feedback", { answer_id: turn.answer_id, rating: value });
      if (!response.ok) throw new Error(String(response.status));
      note.textContent = "Thanks for your feedback!";
      save();
    } catch {
      turn.rating = undefined;
      buttons.forEach((b) => b.setAttribute("aria-pressed", "false"));
      note.textContent = "Your rating could not be sent. Please try again.";
    }
  }
  /** An answer bubble: sources first, then the text; ``update`` re-renders the text. */
  const answerView = (turn) => {
    const body = h("div", {});
    const node = h("div", { class: "msg bot" }, ...sourceList(turn.sources || []), body);
    let frame = 0;
    const update = () => {
      frame = 0;
      const follow = nearBottom();
      body.replaceChildren(markdown(turn.content));
      if (follow) log.scrollTop = log.scrollHeight;
    };
    update();
    return {
      node,
      update: () => (frame ||= requestAnimationFrame(update)),
      finish: () => (update(), node.append(rating(turn))),
    };
  };
  const turnView = (turn) => {
    if (turn.role === "user") return h("div", { class: "msg user", text: turn.content });
    const view = answerView(turn);
    view.finish();
    return view.node;
  };
  function render() {
    log.replaceChildren(...greeting().filter(Boolean), ...state.turns.map(turnView));
    log.scrollTop = log.scrollHeight;
    sync();
  }

  const typingView = () =>
    h("div", { class: "msg bot typing", "aria-hidden": "true" }, h("i"), h("i"), h("i"));
  /** An error bubble with a retry button; a 429 counts down from its Retry-After first. */
  const errorView = (problem, retry) => {
    const node = h("div", { class: "msg bot error" }, h("p", { text: problem.text }));
    if (problem.final) return node;
    const button = h("button", { type: "button", text: "Try again", onclick: () => {
      if (button.getAttribute("aria-disabled") === "true") return;
      node.remove();
      retry();
    } });
    if (problem.wait) {
      const left = h("p", {});
      const tick = () => {
        const seconds = Math.ceil((waitUntil - Date.now()) / 1000);
        if (seconds > 0) {
          left.textContent = `You can ask again in ${seconds} s.`;
          return setTimeout(tick, 250);
        }
        left.textContent = "You can ask again now.";
        button.setAttribute("aria-disabled", "false");
        sync();
      };
      waitUntil = Date.now() + problem.wait * 1000;
      button.setAttribute("aria-disabled", "true");
      node.append(left);
      tick();
    }
    node.append(button);
    return node;
  };

  function submit() {
    const question = input.value.trim();
    if (!question || busy || Date.now() < waitUntil) return;
    input.value = "";
    input.style.height = "";
    ask(question);
  }
  function ask(question) {
    if (busy) return;
    log.querySelector(".chips")?.remove();
    const earlier = history();
    state.turns.push({ role: "user", content: question.slice(0, MAX_CHARS) });
    save();
    show(h("div", { class: "msg user", text: question }));
    answer(question, earlier);
  }
  async function answer(question, earlier) {
    busy = true;
    sync();
    const typing = show(typingView());
    announce("The assistant is typing.");
    controller = new AbortController();
    const mine = controller;
    let view = null;
    const fail = (problem) => {
      view?.node.remove();
      show(errorView(problem, () => answer(question, earlier)));
      announce(problem.text);
    };
    try {
      const response = await post(
        "/chat", { message: question, history: earlier, stream: true }, mine.signal);
      if (!response.ok) return fail(await refusal(response));
      for await (const { name, data } of events(response)) {
        if (name === "meta") {
          const sources = Array.isArray(data.sources) ? data.sources : [];
          const turn = { role: "assistant", content: "", sources, answer_id: String(data.answer_id || "") };
          view = Object.assign(answerView(turn), { turn });
          typing.before(view.node);
        } else if (name === "delta" && view && typeof data.text === "string") {
          typing.remove();
          view.turn.content += data.text;
          view.update();
        } else if (name === "done" && view) {
          view.finish();
          state.turns.push(view.turn);
          save();
          announce(view.turn.content);
          return;
        } else if (name === "error") {
          return fail({ text: String(data.response || "Something went wrong.").slice(0, 500) });
        }
      }
      fail({ text: "The answer was cut off. Please try again." });
    } catch {
      if (!mine.signal.aborted) fail({ text: "I couldn't reach the assistant. Check your connection and try again." });
    } finally {
      typing.remove();
      if (controller === mine) controller = null;
      busy = false;
      sync();
    }
  }

  const mount = () => {
    document.body.append(host);
    render();
    if (state.open) open(false); // a reload keeps the panel open, without taking focus
  };
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
