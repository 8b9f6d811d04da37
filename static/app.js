/* The few things HTML and htmx attributes cannot do on their own: the composer's
 * Enter-to-send and counter, keyboard shortcuts, focus after swaps, copy buttons,
 * the confirm and help dialogs, toasts and local times. No build step. */
(function () {
  "use strict";

  const $ = (selector, root) => (root || document).querySelector(selector);
  const $$ = (selector, root) => Array.from((root || document).querySelectorAll(selector));
  const coarsePointer = window.matchMedia("(pointer: coarse)");

  // ------------------------------------------------------------ composer

  const composer = () => $("#composer");
  const input = () => $("#composer-input");
  const length = (text) => Array.from(text).length; // code points, as the server counts

  function syncComposer() {
    const form = composer();
    const box = input();
    if (!form || !box) return;
    const max = Number(form.dataset.max);
    const count = length(box.value);
    const over = count - max;
    const counter = $("#char-count");
    if (counter) {
      counter.textContent = `${count} / ${max}` + (over > 0 ? " · " + counter.dataset.overText.replace("{n}", over) : "");
      counter.classList.toggle("is-over", over > 0);
    }
    const send = $(".round-btn--send", form);
    const files = $$("[data-chips] .chip", form);
    if (send) send.disabled = (!box.value.trim() && !files.length) || over > 0
      || files.some((chip) => !chip.dataset.id); // uploading, or refused (remove it to send)
    box.style.height = "auto";
    box.style.height = box.scrollHeight + 2 + "px";
  }

  // autofocus suits a keyboard; on a phone it would pop the on-screen keyboard on every page
  function keepKeyboardDown() {
    if (coarsePointer.matches && document.activeElement === input()) input().blur();
  }

  function focusComposer() {
    closeDrawer();
    const box = input();
    if (box) box.focus();
  }

  const draftKey = () => {
    const main = $("#main[data-conversation]");
    return main ? "draft:" + main.dataset.conversation : null;
  };

  function saveDraft() {
    const key = draftKey();
    const box = input();
    if (!key || !box) return;
    try {
      if (box.value) sessionStorage.setItem(key, box.value);
      else sessionStorage.removeItem(key);
    } catch (_) { /* storage may be disabled; drafts are a nicety */ }
  }

  function restoreDraft() {
    const key = draftKey();
    const box = input();
    if (!key || !box || box.value) return;
    try {
      box.value = sessionStorage.getItem(key) || "";
    } catch (_) { /* see saveDraft */ }
  }

  document.addEventListener("input", (event) => {
    if (event.target.id === "composer-input") {
      syncComposer();
      saveDraft();
    }
  });

  // Enter sends, Shift+Enter is a new line; an IME composing Chinese keeps its Enter.
  document.addEventListener("keydown", (event) => {
    if (event.target.id !== "composer-input" || event.key !== "Enter") return;
    if (event.shiftKey || event.altKey || event.ctrlKey || event.metaKey) return;
    if (event.isComposing || event.keyCode === 229 || coarsePointer.matches) return;
    event.preventDefault();
    const send = $(".round-btn--send", composer());
    if (send && !send.disabled) composer().requestSubmit(send);
  });

  document.addEventListener("htmx:afterRequest", (event) => {
    const elt = event.detail.elt;
    if (elt && elt.id === "composer" && event.detail.successful) {
      // a draft's first send swapped its pane for the new conversation's: forget the draft's text too
      const sentFrom = elt.closest("#main[data-conversation]");
      if (sentFrom && !sentFrom.isConnected) {
        try { sessionStorage.removeItem("draft:" + sentFrom.dataset.conversation); } catch (_) { /* see saveDraft */ }
      }
      input().value = "";
      $$("[data-chips] .chip", elt).forEach((chip) => chip.remove());
      syncFileIds(elt);
      saveDraft();
      syncComposer();
      // the next message is a new request: a repeat of this one's id would start nothing
      const rid = $('input[name="request_id"]', elt);
      if (rid) rid.value = Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("");
    }
    if (event.detail.successful && elt && elt.closest && elt.closest("#composer, .retry, .suggestions")) {
      const scroller = $("#scroller");
      if (scroller) scroller.scrollTop = 0; // column-reverse: 0 is the newest message
    }
    if (event.detail.successful && elt && elt.classList && elt.classList.contains("retry")) elt.remove();
  });

  // ------------------------------------------------------------ attachments

  // Without JavaScript the composer posts its file picker as a multipart form. With it, each file is
  // uploaded as soon as it is picked, pasted or dropped (POST /api/files, with a progress bar), shown as
  // a chip, and the composer's post stays urlencoded, carrying the files' ids (`attachments`): a refused
  // file is said on its chip, and the typed text is never touched.
  const csrfToken = () => { const meta = $('meta[name="csrf-token"]'); return meta ? meta.content : ""; };

  function setUpAttachments(root) {
    $$("#composer[enctype]", root).forEach((form) => form.removeAttribute("enctype"));
  }

  function syncFileIds(form) {
    const field = $('input[name="attachments"]', form);
    if (field) field.value = $$("[data-chips] .chip[data-id]", form).map((chip) => chip.dataset.id).join(",");
  }

  function formatSize(bytes) {
    return bytes < 1024 * 1024 ? (bytes / 1024).toFixed(1) + " KB" : (bytes / 1024 / 1024).toFixed(1) + " MB";
  }

  function attachFiles(files) {
    const form = composer();
    const chips = form && $("[data-chips]", form);
    if (!chips) return;
    files.forEach((file) => {
      const chip = document.createElement("li");
      chip.className = "chip is-uploading";
      chip.dataset.name = file.name || "file";
      if (file.type.startsWith("image/") && file.size < 20 * 1024 * 1024) {
        const img = document.createElement("img");
        img.className = "chip__thumb";
        img.alt = "";
        const reader = new FileReader();
        reader.onload = () => { img.src = reader.result; };
        reader.readAsDataURL(file);
        chip.append(img);
      }
      const name = document.createElement("span");
      name.className = "chip__name";
      name.textContent = file.name || "file";
      const size = document.createElement("span");
      size.className = "chip__size";
      size.textContent = formatSize(file.size);
      const bar = document.createElement("progress");
      bar.className = "chip__progress";
      bar.max = file.size || 1;
      bar.value = 0;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "chip__remove";
      remove.dataset.removeFile = "";
      remove.textContent = "×";
      remove.setAttribute("aria-label", chips.dataset.removeLabel + " " + (file.name || ""));
      const error = document.createElement("span");
      error.className = "chip__error";
      error.setAttribute("role", "alert");
      chip.append(name, size, bar, error, remove);
      chips.append(chip);
      const xhr = new XMLHttpRequest();
      chip._xhr = xhr;
      xhr.open("POST", "/api/files");
      xhr.setRequestHeader("X-CSRF-Token", csrfToken());
      xhr.upload.addEventListener("progress", (event) => { if (event.lengthComputable) bar.value = event.loaded; });
      xhr.addEventListener("load", () => {
        chip.classList.remove("is-uploading");
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (_) { /* an error page */ }
        if (xhr.status === 201 && body && body[0]) {
          chip.dataset.id = body[0].id;
          bar.remove();
        } else {
          chip.classList.add("is-error");
          error.textContent = (body && body.detail) || document.body.dataset.networkError;
        }
        syncFileIds(form);
        syncComposer();
      });
      xhr.addEventListener("error", () => {
        chip.classList.remove("is-uploading");
        chip.classList.add("is-error");
        error.textContent = document.body.dataset.networkError;
        syncComposer();
      });
      const data = new FormData();
      data.append("files", file, file.name || "file");
      xhr.send(data);
    });
    syncComposer();
  }

  document.addEventListener("change", (event) => {
    if (event.target.matches && event.target.matches("#composer [data-attach]")) {
      attachFiles(Array.from(event.target.files));
      event.target.value = ""; // uploaded already: the post carries ids, not the files again
    }
  });

  document.addEventListener("click", (event) => {
    const remove = event.target.closest && event.target.closest("[data-remove-file]");
    if (!remove) return;
    const chip = remove.closest(".chip");
    if (chip._xhr && chip._xhr.readyState !== 4) chip._xhr.abort();
    if (chip.dataset.id) {
      fetch("/api/files/" + encodeURIComponent(chip.dataset.id), { method: "DELETE", headers: { "X-CSRF-Token": csrfToken() } });
    }
    const form = chip.closest("form");
    chip.remove();
    syncFileIds(form);
    syncComposer();
    focusComposer();
  });

  // A pasted image or file (Ctrl+V of a screenshot), or files dropped anywhere on the page.
  document.addEventListener("paste", (event) => {
    const files = event.clipboardData ? Array.from(event.clipboardData.files) : [];
    if (files.length && composer()) {
      event.preventDefault();
      attachFiles(files);
    }
  });
  const carriesFiles = (event) => event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files");
  document.addEventListener("dragover", (event) => {
    if (carriesFiles(event) && composer()) {
      event.preventDefault();
      document.body.classList.add("is-dropping");
    }
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) document.body.classList.remove("is-dropping");
  });
  document.addEventListener("drop", (event) => {
    document.body.classList.remove("is-dropping");
    if (carriesFiles(event) && composer()) {
      event.preventDefault();
      attachFiles(Array.from(event.dataTransfer.files));
    }
  });

  // ------------------------------------------------------------ CSRF and keyboard triggers

  // Every htmx request carries the page's CSRF token (forms without JavaScript post it as a field).
  document.addEventListener("htmx:configRequest", (event) => {
    const meta = $('meta[name="csrf-token"]');
    if (meta && meta.content) event.detail.headers["X-CSRF-Token"] = meta.content;
  });

  // ------------------------------------------------------------ sidebar and drawer

  // every conversation the sidebar shows (pinned, in an open folder, the list), in its order
  const results = () => $$("#sidebar .session__link").filter((link) => link.offsetParent !== null);
  const drawer = () => $("#drawer-toggle");

  function closeDrawer() {
    if (drawer()) drawer().checked = false;
  }

  // the conversation being opened by Alt+Arrow, before its URL is pushed: a held key keeps moving
  let opening = null;

  function markActive() {
    const match = location.pathname.match(/^\/c\/([0-9a-f-]{36})/);
    const current = opening || (match && match[1]);
    for (const item of $$("#sidebar .session")) {
      const on = !!current && item.id === "conv-" + current;
      item.classList.toggle("is-active", on);
      const link = $(".session__link", item);
      if (!link) continue;
      if (on) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  function openSibling(step) {
    const links = results();
    if (!links.length) return;
    const current = links.findIndex((link) => link.getAttribute("aria-current") === "page");
    const next = current === -1 ? 0 : current + step;
    if (next < 0 || next >= links.length) return;
    opening = links[next].closest(".session").id.slice("conv-".length);
    markActive();
    links[next].scrollIntoView({ block: "nearest" });
    links[next].click();
  }

  function focusSearch() {
    const search = $("#search");
    if (!search) return;
    if (window.getComputedStyle($("#sidebar")).visibility === "hidden" && drawer()) drawer().checked = true;
    search.focus();
    search.select();
  }

  function focusResult(index) {
    const links = results();
    if (!links.length) return;
    const link = links[Math.max(0, Math.min(index, links.length - 1))];
    link.focus();
    link.scrollIntoView({ block: "nearest" });
  }

  // ------------------------------------------------------------ keyboard

  function inTextField(element) {
    if (!element || !element.closest) return false;
    const field = element.closest("input, textarea, select, [contenteditable=''], [contenteditable='true']");
    return !!field && !["checkbox", "radio", "button", "submit"].includes(field.type);
  }

  function toggleHelp() {
    const help = $("#help");
    if (!help) return;
    if (help.open) help.close();
    else help.showModal();
  }

  // Message controls from the keyboard: ↑ in an empty message box edits your last message,
  // Alt+R regenerates the last reply, [ and ] flip the versions of the last message that has them.
  document.addEventListener("keydown", (event) => {
    const { key, target } = event;
    if (key === "ArrowUp" && target.id === "composer-input" && !target.value && !event.altKey && !event.ctrlKey
        && !event.metaKey && !event.shiftKey) {
      const edits = $$("#message-list .msg--user .msg__edit");
      if (edits.length) {
        event.preventDefault();
        edits[edits.length - 1].click();
      }
      return;
    }
    if (event.altKey && !event.ctrlKey && !event.metaKey && (key === "r" || key === "R" || event.code === "KeyR")) {
      const regen = $$("#message-list > article.msg--assistant:last-of-type .msg__regen button")[0];
      if (regen) {
        event.preventDefault();
        regen.click();
      }
      return;
    }
    if ((key === "[" || key === "]") && !inTextField(target) && !event.ctrlKey && !event.metaKey && !event.altKey) {
      const groups = $$("#message-list .versions");
      const last = groups[groups.length - 1];
      const button = last && $(key === "[" ? ".versions__prev" : ".versions__next", last);
      if (button && !button.disabled) {
        event.preventDefault();
        button.click();
      }
    }
  });

  // Keyboard shortcuts that send a request fire custom events the elements' hx-trigger listens
  // for: htmx's own key filters (`keydown[...]`) would need eval, which the CSP forbids.
  document.addEventListener("keydown", (event) => {
    const { key, target } = event;
    if (key !== "Escape" || event.shiftKey) return;
    if (target.classList && target.classList.contains("rename__input")) {
      event.preventDefault();
      htmx.trigger(target, "cancel-rename");
    } else if (!target.closest("dialog,#sidebar,details[open]") && $(".round-btn--stop")) {
      htmx.trigger(document.body, "stop-reply");
    }
  });

  document.addEventListener("keydown", (event) => {
    const { key, target } = event;
    const ctrl = event.ctrlKey || event.metaKey;

    if (event.altKey && !ctrl && (key === "ArrowDown" || key === "ArrowUp")) {
      event.preventDefault();
      openSibling(key === "ArrowDown" ? 1 : -1);
      return;
    }
    if (ctrl && !event.altKey && !event.shiftKey && key.toLowerCase() === "k") {
      event.preventDefault();
      focusSearch();
      return;
    }
    if (ctrl && (key === "/" || key === "?")) {
      event.preventDefault();
      toggleHelp();
      return;
    }
    if (event.altKey && !ctrl && !event.shiftKey && (key.toLowerCase() === "u" || event.code === "KeyU")) {
      const picker = $("#composer [data-attach]");
      if (picker) {
        event.preventDefault();
        picker.click();
      }
      return;
    }
    if (ctrl && event.shiftKey && !event.altKey && key.toLowerCase() === "o") {
      event.preventDefault();
      htmx.trigger(document.body, "new-chat"); // the new-chat form's hx-trigger sends the request
      return;
    }
    if (key === "Escape" && event.shiftKey) {
      event.preventDefault();
      focusComposer();
      return;
    }
    if (document.querySelector("dialog[open]")) return;
    if (key === "Escape") {
      const menu = $("details.menu[open]");
      if (menu) {
        menu.open = false;
        $("summary", menu).focus();
        return;
      }
      if (drawer() && drawer().checked && !target.closest("#sidebar")) {
        closeDrawer();
        return;
      }
    }
    if (!inTextField(target) && !ctrl && !event.altKey) {
      if (key === "/") {
        event.preventDefault();
        focusSearch();
        return;
      }
      if (key === "?") {
        event.preventDefault();
        toggleHelp();
        return;
      }
    }
    if (target.id === "search") {
      if (key === "ArrowDown") {
        event.preventDefault();
        focusResult(0);
      } else if (key === "Enter") {
        event.preventDefault();
        if (results()[0]) results()[0].click();
      } else if (key === "Escape") {
        event.preventDefault();
        focusComposer();
      }
      return;
    }
    if (target.classList && target.classList.contains("session__link")) {
      const index = results().indexOf(target);
      if (key === "ArrowDown" || key === "j") {
        event.preventDefault();
        focusResult(index + 1);
      } else if (key === "ArrowUp" || key === "k") {
        event.preventDefault();
        if (index <= 0) focusSearch();
        else focusResult(index - 1);
      } else if (key === "Escape") {
        event.preventDefault();
        focusComposer();
      }
    }
  });

  // labels that act as buttons (the drawer's open/close) answer Enter and Space too
  document.addEventListener("keydown", (event) => {
    const label = event.target.closest && event.target.closest("label[role=button]");
    if (label && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      label.click();
    }
  });

  // ------------------------------------------------------------ focus after swaps

  // Chromium may keep a removed element as activeElement until the next frame
  const focusLost = () => {
    const active = document.activeElement;
    return !active || active === document.body || !active.isConnected;
  };

  document.addEventListener("htmx:beforeSwap", (event) => {
    const { xhr, target } = event.detail;
    if (xhr && xhr.status >= 400) {
      // our HTML errors are toasts the server retargets into #toasts; anything else gets a generic one
      if (xhr.getResponseHeader("HX-Retarget")) event.detail.shouldSwap = true;
      else showToast(document.body.dataset.networkError);
      return;
    }
    const active = document.activeElement;
    const toast = target && target.closest && target.closest(".toast");
    if (toast && toast.contains(active)) {
      setTimeout(() => { if (focusLost()) focusComposer(); }); // Undo pressed: back to typing
      return;
    }
    const item = target && target.closest && target.closest(".session");
    if (!item || !active || !item.contains(active)) return;
    const id = item.id;
    const neighbour = item.nextElementSibling || item.previousElementSibling;
    setTimeout(() => {
      if (!focusLost()) return; // autofocus won
      const again = document.getElementById(id);
      const link = (again && $(".session__link", again)) || (neighbour && $(".session__link", neighbour));
      if (link) link.focus();
      else focusComposer();
    });
  });

  document.addEventListener("htmx:oobAfterSwap", () => {
    if (focusLost() && !coarsePointer.matches) focusComposer();
  });

  document.addEventListener("htmx:sendError", () => {
    opening = null;
    showToast(document.body.dataset.networkError);
  });
  document.addEventListener("htmx:responseError", () => { opening = null; });

  // a sidebar rendered while the user moved on is corrected at once, not after settling
  document.addEventListener("htmx:afterSwap", markActive);

  // An opened conversation's composer takes the focus as it is swapped in. htmx would
  // apply its autofocus only when it settles (20 ms later), taking the focus back from a
  // search box the user reached in between (Alt+Arrow, then Ctrl+K at once).
  document.addEventListener("htmx:afterSwap", (event) => {
    const elt = event.detail.elt;
    const box = elt && elt.id === "main" ? $("#composer-input[autofocus]", elt) : null;
    if (!box) return;
    box.removeAttribute("autofocus");
    if (!coarsePointer.matches) box.focus();
  });

  document.addEventListener("htmx:afterSettle", (event) => {
    const elt = event.detail.elt;
    if (elt && elt.id === "main") opening = null;
    localTimes(elt);
    startToasts();
    markActive();
    if (elt && elt.id === "main") {
      closeDrawer();
      restoreDraft();
      syncComposer();
      keepKeyboardDown();
    }
  });

  document.addEventListener("htmx:historyRestore", () => {
    markActive();
    restoreDraft();
    syncComposer();
  });

  // ------------------------------------------------------------ streaming

  // Keep the stream URL's place current (`after`; on a page's channel also `turn`): if the
  // extension has to reconnect from scratch it resumes after the last event shown instead of
  // repeating the reply (the browser's own reconnects send Last-Event-ID instead).
  document.addEventListener("htmx:sseBeforeMessage", (event) => {
    const message = event.detail;
    const source = event.target.closest && event.target.closest("[sse-connect]");
    const cut = message && message.lastEventId ? message.lastEventId.lastIndexOf(":") : -1;
    const turn = cut >= 0 ? message.lastEventId.slice(0, cut) : "";  // event ids are "{turn}:{seq}"
    if (turn) seenTurns.add(turn);
    // a turn the page already shows (its post answered with the bubbles while the channel connected)
    if (turn && message.type === "turn" && document.getElementById("turn-" + turn)) {
      event.preventDefault();
      return;
    }
    if (source && cut >= 0) {
      const url = new URL(source.getAttribute("sse-connect"), location.href);
      if (url.searchParams.has("channel")) url.searchParams.set("turn", turn);
      url.searchParams.set("after", message.lastEventId.slice(cut + 1));
      source.setAttribute("sse-connect", url.pathname + url.search);
    }
    // the done event brings the conversation's sidebar item itself; search results are asked for again
    const search = $("#search");
    if (message && message.type === "done" && search && search.value.trim()) {
      setTimeout(() => htmx.trigger(document.body, "sessions-changed"), 50);
    }
  });

  // ------------------------------------------------------------ the page's channel

  // A conversation's page keeps one event stream (its channel) for every turn. Two things a stream
  // cannot see for itself: a connection that died without an error (a laptop that slept: the server
  // still counts the channel as open and hands it the next turn), and the browser's few connections
  // per server (about six over HTTP/1.1), which every open tab's channel would hold. So a send whose
  // post says the channel brings the turn (X-Turn-Id) reconnects the channel if nothing of that turn
  // came within a few seconds, and a hidden tab closes its channel until it is shown again. A channel
  // that reconnects resumes where the page is (`turn`/`after` in its URL), or shows the list again.
  const seenTurns = new Set();
  const channelSource = () => {
    const element = $(".chat__inner[sse-connect]");
    const data = element && element["htmx-internal-data"];
    return data && data.sseEventSource ? data.sseEventSource : null;
  };

  function reconnectChannel() {
    const source = channelSource();
    if (!source) return;
    source.close();
    if (source.onerror) source.onerror(new Event("error")); // the extension reconnects a closed stream
  }

  document.addEventListener("htmx:afterRequest", (event) => {
    const xhr = event.detail.xhr;
    const turn = event.detail.successful && xhr && xhr.getResponseHeader("X-Turn-Id");
    if (!turn) return;
    setTimeout(() => {
      if (!seenTurns.has(turn) && !document.hidden) reconnectChannel();
    }, 3000);
  });

  document.addEventListener("visibilitychange", () => {
    const source = channelSource();
    if (!source) return;
    if (document.hidden) source.close();
    else if (source.readyState === EventSource.CLOSED) reconnectChannel();
  });

  // A reply's end on a page's channel brings the conversation's sidebar item as a template: it
  // replaces the item where the sidebar shows it (search results are asked for again instead).
  document.addEventListener("htmx:load", (event) => {
    const update = event.target;
    if (!(update instanceof HTMLTemplateElement) || !update.classList.contains("session-update")) return;
    const item = document.getElementById(update.dataset.item);
    const fresh = update.content.firstElementChild;
    update.remove();
    const search = $("#search");
    if (item && fresh && item.closest("#session-list") && !(search && search.value.trim())) {
      item.replaceWith(fresh);
      htmx.process(fresh);
      markActive();
    }
  });

  // ------------------------------------------------------------ copy

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      // http:// on a LAN address has no clipboard API: fall back to a selection
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy], [data-copy-message], [data-copy-source]");
    if (!button) return;
    if (button.hasAttribute("data-copy-source")) {
      const template = $("template.msg__source", button.closest(".msg"));
      if (template) await copyText(template.content.textContent);
      button.classList.add("is-copied");
      setTimeout(() => button.classList.remove("is-copied"), 1500);
      return;
    }
    const source = button.hasAttribute("data-copy")
      ? $("pre", button.closest(".code"))
      : $(".msg__body", button.closest(".msg"));
    if (!source) return;
    await copyText(source.innerText.replace(/\n$/, ""));
    const label = button.hasAttribute("data-copy") ? button.textContent : null;
    button.classList.add("is-copied");
    if (label !== null) button.textContent = document.body.dataset.copied;
    setTimeout(() => {
      button.classList.remove("is-copied");
      if (label !== null) button.textContent = label;
    }, 1500);
  });

  // ------------------------------------------------------------ dialogs

  document.addEventListener("click", (event) => {
    if (event.target.closest("[data-open-help]")) toggleHelp();
    const dialog = event.target.closest("dialog");
    if (dialog && event.target === dialog) dialog.close(); // a click on the backdrop
    const menu = $("details.menu[open]");
    if (menu && !menu.contains(event.target)) menu.open = false;
  });

  document.addEventListener("htmx:confirm", (event) => {
    if (!event.detail.question) return;
    event.preventDefault();
    const dialog = $("#confirm");
    $("#confirm-text").textContent = event.detail.question;
    dialog.returnValue = "";
    dialog.addEventListener("close", () => {
      if (dialog.returnValue === "ok") event.detail.issueRequest(true);
    }, { once: true });
    dialog.showModal();
  });

  // ------------------------------------------------------------ toasts

  function showToast(text) {
    const template = $("#toast-template");
    if (!template || !text) return;
    const toast = template.content.firstElementChild.cloneNode(true);
    $(".toast__text", toast).textContent = text;
    $("#toasts").appendChild(toast);
    startToasts();
  }

  function startToasts() {
    for (const toast of $$("#toasts .toast:not([data-timer])")) {
      toast.dataset.timer = "1";
      const wait = $(".toast__action", toast) ? 10000 : 5000;
      setTimeout(() => toast.remove(), wait);
    }
  }

  document.addEventListener("click", (event) => {
    const close = event.target.closest("[data-dismiss]");
    if (close) close.closest(".toast").remove();
  });


  // ------------------------------------------------------------ pins, archive, folders, selection (issue 37)

  // p pins, e archives, m moves, x selects the focused conversation of the sidebar: each presses the
  // control its menu has (the same form a click or a page without JavaScript posts)
  let refocus = null;
  document.addEventListener("keydown", (event) => {
    const { key, target } = event;
    const move = target.closest && target.closest("form.move");
    if (move && key === "Enter" && target.tagName === "SELECT") {  // (a select does not submit its form)
      event.preventDefault();
      refocus = move.closest(".session").id;
      move.requestSubmit();
      return;
    }
    const menu = target.closest && target.closest("details.session__menu[open]");
    if (menu && key === "Escape") {
      event.preventDefault();
      menu.open = false;
      $("summary", menu).focus();
      return;
    }
    if (move && key === "Escape") {
      event.preventDefault();
      htmx.trigger($("a[hx-get]", move), "click");
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || inTextField(target)) return;
    const item = target.closest && target.closest("#sidebar .session");
    if (!item || !["p", "e", "m", "x"].includes(key)) return;
    event.preventDefault();
    if (key === "x") {
      const box = $(".session__select", item);
      if (box) {
        box.checked = !box.checked;
        lastPicked = box;
        selectionChanged();
      }
      return;
    }
    const control = $(`[data-key="${key}"]`, item);
    if (!control) return;
    refocus = item.id;
    control.click();
  });

  // after the list comes back, the conversation acted on keeps the focus (wherever its group is now)
  document.addEventListener("htmx:afterSettle", () => {
    if (!refocus) return;
    const again = document.getElementById(refocus);
    refocus = null;
    if (!focusLost()) return;
    const field = again && $("select, input.rename__input", again);
    const link = again && $(".session__link", again);
    if (field) field.focus();
    else if (link) {
      const folder = link.closest("details.folder");
      if (folder) folder.open = true;
      link.focus();
    }
  });

  // a reply's sidebar item moves to the top of the list, not into the archive's or a folder's view
  // (the turn's answer does not know which view the sidebar shows; a whole new list still lands)
  document.addEventListener("htmx:oobBeforeSwap", (event) => {
    const { target, fragment } = event.detail;
    if (!target || target.id !== "session-list" || !$("#shelves .shelf__view")) return;
    const whole = fragment && (fragment.id === "session-list"
      || (fragment.querySelector && fragment.querySelector("#session-list")));
    if (!whole) event.detail.shouldSwap = false;
  });

  // an item's menu closes when the click is elsewhere (one open at a time)
  document.addEventListener("click", (event) => {
    for (const menu of $$("details.session__menu[open]")) {
      if (!menu.contains(event.target)) menu.open = false;
    }
  });

  // selection: checkboxes (Shift+click picks the range from the last one picked); the batch bar shows
  // once something is picked
  let lastPicked = null;
  const boxes = () => $$("#sidebar .session__select").filter((box) => box.offsetParent !== null || box.checked);

  function selectionChanged() {
    const bar = $("#bulk");
    if (!bar) return;
    const count = $$("#sidebar .session__select:checked").length;
    bar.classList.toggle("is-active", count > 0);
    const label = $(".bulk__count", bar);
    if (label) label.textContent = count ? label.dataset.countText.replace("{n}", count) : "";
  }

  document.addEventListener("click", (event) => {
    const box = event.target.closest && event.target.closest(".session__select");
    if (!box) return;
    if (event.shiftKey && lastPicked && lastPicked !== box && lastPicked.isConnected) {
      const all = boxes();
      const [from, to] = [all.indexOf(lastPicked), all.indexOf(box)].sort((a, b) => a - b);
      if (from >= 0) for (const other of all.slice(from, to + 1)) other.checked = box.checked;
    }
    lastPicked = box;
    selectionChanged();
  });
  document.addEventListener("htmx:afterSwap", selectionChanged);

  // folders open or closed as this browser left them
  const FOLDERS_KEY = "folders-open";
  function openFolders() {
    try { return new Set(JSON.parse(localStorage.getItem(FOLDERS_KEY) || "[]")); } catch (_) { return new Set(); }
  }
  function restoreFolders(root) {
    const open = openFolders();
    for (const folder of $$("details.folder", root && root.querySelectorAll ? root : document)) {
      folder.open = open.has(folder.dataset.folder);
    }
  }
  document.addEventListener("toggle", (event) => {
    const folder = event.target;
    if (!(folder instanceof HTMLDetailsElement) || !folder.classList.contains("folder")) return;
    const open = openFolders();
    if (folder.open) open.add(folder.dataset.folder);
    else open.delete(folder.dataset.folder);
    try { localStorage.setItem(FOLDERS_KEY, JSON.stringify([...open])); } catch (_) { /* private mode */ }
  }, true);
  document.addEventListener("htmx:load", (event) => {
    restoreFolders(event.target.parentNode || document);
    for (const item of $$(".session", event.target.querySelectorAll ? event.target : document)) item.draggable = true;
  });

  // drag a conversation onto a folder to move it there, onto the list to take it out of its folder
  // (only a drag that started on this page counts: data dragged in from elsewhere names no path here)
  let dragged = "";
  document.addEventListener("dragstart", (event) => {
    const item = event.target.closest && event.target.closest("#sidebar .session");
    if (!item || !event.dataTransfer) return;
    dragged = item.dataset.id || "";
    event.dataTransfer.setData("text/x-conversation", item.dataset.id);
    event.dataTransfer.effectAllowed = "move";
  });
  const dropZone = (target) => target.closest && target.closest("#sidebar details.folder, #session-list");
  document.addEventListener("dragover", (event) => {
    const zone = dropZone(event.target);
    if (!zone || !event.dataTransfer || !event.dataTransfer.types.includes("text/x-conversation")) return;
    event.preventDefault();
    for (const other of $$(".is-drop-target")) if (other !== zone) other.classList.remove("is-drop-target");
    zone.classList.add("is-drop-target");
  });
  document.addEventListener("dragleave", (event) => {
    const zone = dropZone(event.target);
    if (zone && !zone.contains(event.relatedTarget)) zone.classList.remove("is-drop-target");
  });
  document.addEventListener("drop", (event) => {
    const zone = dropZone(event.target);
    const id = event.dataTransfer && event.dataTransfer.getData("text/x-conversation");
    const mine = id && id === dragged && /^[0-9a-f-]{36}$/.test(id);
    dragged = "";
    if (!zone || !mine) return;
    event.preventDefault();
    zone.classList.remove("is-drop-target");
    const folder = zone.matches("details.folder") ? zone.dataset.folder : "";
    htmx.ajax("POST", `/c/${id}/keep`, { target: "#session-list", swap: "outerHTML",
                                         values: { what: "folder", value: folder } });
  });

  // ------------------------------------------------------------ local times

  function localTimes(root) {
    for (const time of $$("time[data-local-time]", root && root.querySelectorAll ? root : document)) {
      const moment = new Date(time.getAttribute("datetime"));
      if (Number.isNaN(moment.getTime())) continue;
      time.textContent = moment.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      time.title = moment.toLocaleString();
    }
  }

  // ------------------------------------------------------------ start

  document.addEventListener("htmx:load", () => setUpAttachments(document));

  function start() {
    document.documentElement.classList.add("js");
    setUpAttachments(document);
    keepKeyboardDown();
    restoreDraft();
    syncComposer();
    localTimes(document);
    startToasts();
    markActive();
    restoreFolders(document);
    for (const item of $$("#sidebar .session")) item.draggable = true;
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
