// sandpool dashboard: live updates, countdowns, confirmations and the
// terminal. Every page works without it (forms post, pages render on the
// server); this makes them follow the event stream.
"use strict";

(function () {
  const main = document.getElementById("main");

  // --- Live updates: /ui/live sends patches rendered on the server. ---

  function parse(html) {
    const t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content.firstElementChild;
  }

  // keepFocus moves the focus from an element about to be replaced to its
  // counterpart in the new one, so keyboard users do not lose their place.
  function keepFocus(old, fresh) {
    const a = document.activeElement;
    if (!a || !old.contains(a)) return;
    let twin = null;
    if (a.id) twin = fresh.querySelector("#" + CSS.escape(a.id));
    else if (a.getAttribute("formaction")) twin = fresh.querySelector('[formaction="' + CSS.escape(a.getAttribute("formaction")) + '"]');
    else if (a.getAttribute("href")) twin = fresh.querySelector('[href="' + CSS.escape(a.getAttribute("href")) + '"]');
    if (twin) twin.focus();
  }

  function replace(old, html) {
    const fresh = parse(html);
    if (!fresh) return;
    old.replaceWith(fresh);
    keepFocus(old, fresh);
    tick(fresh);
  }

  function apply(p) {
    const el = p.id ? document.getElementById(p.id) : null;
    switch (p.op) {
      case "upsert": {
        if (el) { replace(el, p.html); break; }
        const parent = document.getElementById(p.parent);
        const fresh = parse(p.html);
        if (parent && fresh) {
          parent.appendChild(fresh);
          tick(fresh);
          const empty = document.getElementById("sb-empty");
          if (empty) empty.remove();
        }
        break;
      }
      case "replace":
        if (el) replace(el, p.html);
        break;
      case "remove":
        if (el) el.remove();
        break;
      case "prepend": {
        const parent = document.getElementById(p.parent);
        const fresh = parse(p.html);
        if (!parent || !fresh) break;
        parent.insertBefore(fresh, parent.firstElementChild);
        const max = parseInt(parent.dataset.max || "0", 10);
        while (max > 0 && parent.children.length > max) parent.lastElementChild.remove();
        break;
      }
      case "stale":
        state("Some updates were missed.", true, true);
        break;
    }
  }

  const liveState = document.getElementById("live-state");
  function state(text, bad, offerReload) {
    if (!liveState) return;
    liveState.textContent = text + " ";
    liveState.classList.toggle("off", !!bad);
    if (offerReload) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = "Reload the page";
      b.addEventListener("click", () => location.reload());
      liveState.appendChild(b);
    }
  }

  function connect(query) {
    const es = new EventSource("/ui/live?" + query);
    let opened = false;
    es.addEventListener("open", () => {
      if (opened) {
        state("Live updates resumed; some may have been missed.", true, true);
      } else {
        state("Live updates on.");
      }
      opened = true;
    });
    es.addEventListener("patch", (ev) => {
      for (const p of JSON.parse(ev.data) || []) apply(p);
      document.dispatchEvent(new CustomEvent("sandpool:patched"));
    });
    es.addEventListener("signedout", () => {
      es.close();
      location.assign("/ui/signin?next=" + encodeURIComponent(location.pathname + location.search));
    });
    es.addEventListener("error", () => {
      if (es.readyState === EventSource.CLOSED) state("Live updates stopped.", true, true);
      else state("Live updates: reconnecting…", true);
    });
    window.addEventListener("pagehide", () => es.close());
  }

  if (main && main.dataset.live && window.EventSource) connect(main.dataset.live);

  // --- Countdowns: "timeout left" counts down between updates. ---

  function left(ms) {
    let s = Math.max(0, Math.round(ms / 1000));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    s = s % 60;
    if (h >= 24) return Math.floor(h / 24) + "d " + (h % 24) + "h";
    if (h > 0) return h + "h " + m + "m";
    if (m > 0) return m + "m " + s + "s";
    return s + "s";
  }

  function tick(root) {
    const now = Date.now();
    const scope = root || document;
    const els = scope.matches && scope.matches("[data-deadline]") ? [scope] : scope.querySelectorAll("[data-deadline]");
    for (const el of els) {
      const text = left(Date.parse(el.dataset.deadline) - now);
      if (el.textContent !== text) el.textContent = text;
    }
  }
  setInterval(() => tick(), 1000);

  // --- Confirmations for what cannot be undone. ---

  document.addEventListener("click", (ev) => {
    const b = ev.target.closest("button");
    if (!b) return;
    let msg = b.dataset.confirm;
    if (!msg && b.name === "delete" && b.value) msg = "Delete sandbox " + b.value + "? Its processes and files are lost.";
    if (msg && !window.confirm(msg)) ev.preventDefault();
  });

  // --- Terminal: a WebSocket to a PTY in the sandbox (xterm.js). ---

  const open = document.getElementById("terminal-open");
  if (open) setupTerminal(open);

  function setupTerminal(open) {
    const box = document.getElementById("terminal");
    const close = document.getElementById("terminal-close");
    const status = document.getElementById("terminal-state");
    let ws = null, term = null, fit = null;

    function say(t) { status.textContent = t; }

    function stop() {
      if (ws) ws.close(1000);
      ws = null;
      if (term) term.dispose();
      term = null;
      box.hidden = true;
      close.hidden = true;
      open.hidden = false;
      open.focus();
    }

    window.addEventListener("resize", () => { if (fit && term) fit.fit(); });
    open.addEventListener("click", () => {
      if (!window.Terminal) { say("The terminal's script did not load."); return; }
      if (term) term.dispose();
      box.hidden = false;
      open.hidden = true;
      close.hidden = false;
      term = new window.Terminal({ cursorBlink: true, fontFamily: "ui-monospace, DejaVu Sans Mono, monospace", fontSize: 14, screenReaderMode: true });
      fit = new window.FitAddon.FitAddon();
      term.loadAddon(fit);
      // Shift+Escape leaves the terminal (Tab goes to the shell), so a
      // keyboard never gets stuck in it.
      term.attachCustomKeyEventHandler((e) => {
        if (e.type === "keydown" && e.key === "Escape" && e.shiftKey) {
          close.focus();
          return false;
        }
        return true;
      });
      term.open(box);
      fit.fit();
      const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + open.dataset.terminal;
      ws = new WebSocket(url);
      ws.binaryType = "arraybuffer";
      const enc = new TextEncoder();
      ws.addEventListener("open", () => {
        // The first message proves the page belongs to the session.
        ws.send(JSON.stringify({ csrf: main.dataset.csrf, rows: term.rows, cols: term.cols }));
        say("Connected.");
        term.focus();
      });
      ws.addEventListener("message", (ev) => {
        if (typeof ev.data === "string") return;
        term.write(new Uint8Array(ev.data));
      });
      ws.addEventListener("close", (ev) => {
        say(ev.reason ? "Terminal closed: " + ev.reason : "Terminal closed.");
        if (term) term.write("\r\n[terminal closed]\r\n");
        close.hidden = true;
        open.hidden = false;
        ws = null;
      });
      term.onData((d) => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(enc.encode(d)); });
      term.onResize((size) => {
        if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ rows: size.rows, cols: size.cols }));
      });
    });
    close.addEventListener("click", stop);
  }
})();
