// The demo page: polls the channel, replaces messages that changed, and sends clicks and
// /hitl commands to the demo server with the page's token. Every HTML string comes from the
// server, which escapes everything it renders.
"use strict";

(function () {
  const token = document.querySelector('meta[name="demo-token"]').content;
  const feed = document.getElementById("feed");
  const statusLine = document.getElementById("status");
  const notice = document.getElementById("notice");
  const shown = new Map(); // key -> version
  let busy = false;

  function say(text) {
    notice.textContent = text || "";
  }

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Demo-Token": token },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    let answer = {};
    try {
      answer = await response.json();
    } catch (error) {
      answer = { ok: false, error: "HTTP " + response.status };
    }
    if (!response.ok || !answer.ok) {
      throw new Error(answer.error || "HTTP " + response.status);
    }
    return answer;
  }

  function entryNode(entry) {
    const holder = document.createElement("div");
    holder.className = "entry";
    holder.dataset.key = entry.key;
    holder.dataset.version = entry.version;
    holder.innerHTML = entry.html;
    return holder;
  }

  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const response = await fetch("/api/channel", { credentials: "same-origin" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const state = await response.json();
      const atBottom = feed.scrollHeight - feed.scrollTop - feed.clientHeight < 40;
      const loading = feed.querySelector(".loading");
      if (loading) loading.remove();
      const wanted = new Set(state.entries.map((e) => e.key));
      for (const node of Array.from(feed.querySelectorAll(".entry"))) {
        if (!wanted.has(node.dataset.key)) {
          shown.delete(node.dataset.key);
          node.remove();
        }
      }
      let previous = null;
      for (const entry of state.entries) {
        let node = feed.querySelector('.entry[data-key="' + CSS.escape(entry.key) + '"]');
        if (node && node.dataset.version !== entry.version) {
          const fresh = entryNode(entry);
          node.replaceWith(fresh);
          node = fresh;
        } else if (!node) {
          node = entryNode(entry);
          if (previous) previous.after(node);
          else feed.prepend(node);
        }
        shown.set(entry.key, entry.version);
        previous = node;
      }
      statusLine.textContent =
        state.open + " open prompt" + (state.open === 1 ? "" : "s") +
        (state.hidden ? " · " + state.hidden + " older messages not shown" : "");
      if (atBottom) feed.scrollTop = feed.scrollHeight;
    } catch (error) {
      statusLine.textContent = "(demo not reachable: " + error.message + ")";
    } finally {
      busy = false;
    }
  }

  async function choose(control, value) {
    const message = control.closest("[data-ts]");
    if (!message) return;
    control.disabled = true;
    try {
      await post("/api/click", {
        ts: message.dataset.ts,
        action_id: control.dataset.action,
        value: value,
      });
      say("");
    } catch (error) {
      say("Not sent: " + error.message);
      control.disabled = false;
    }
    refresh();
  }

  feed.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button && button.dataset.value !== undefined) choose(button, button.dataset.value);
  });
  feed.addEventListener("change", (event) => {
    const menu = event.target.closest("select[data-action]");
    if (menu && menu.value) choose(menu, menu.value);
  });

  document.getElementById("composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("command");
    const typed = input.value.trim();
    const found = /^\/hitl(?:\s+([\s\S]*))?$/.exec(typed);
    if (!found) {
      say("Only /hitl commands work here, e.g. /hitl stats");
      return;
    }
    try {
      await post("/api/command", { text: found[1] || "" });
      input.value = "";
      say("");
      feed.scrollTop = feed.scrollHeight;
    } catch (error) {
      say("Not sent: " + error.message);
    }
    setTimeout(refresh, 300);
  });

  refresh();
  setInterval(refresh, 1000);
})();
