// The gallery page of `daam-datasets preview` (inlined into index.html): hover or focus a word to
// show its overlay, click to pin it; ?word=K (index or text) and ?sample=I select words on load;
// ?maps=concept (or the header switch) shows ConceptAttention maps instead of DAAM's.
(function () {
  "use strict";
  var figures = Array.prototype.slice.call(document.querySelectorAll("figure.sample"));
  function show(fig, button) {
    var overlay = fig.querySelector("img.overlay");
    var status = fig.querySelector(".status");
    var tokens = fig.querySelectorAll("ol.tokens li");
    Array.prototype.forEach.call(fig.querySelectorAll("button.word"), function (b) { b.classList.toggle("active", b === button); });
    Array.prototype.forEach.call(tokens, function (li) { li.classList.remove("on"); });
    if (!button) {
      overlay.hidden = true;
      overlay.removeAttribute("src");
      fig.removeAttribute("data-word");
      status.textContent = "hover or click a word";
      status.removeAttribute("title");
      return;
    }
    var start = +button.dataset.start, end = +button.dataset.end;
    for (var t = start; t < end && t < tokens.length; t++) { tokens[t].classList.add("on"); }
    var concept = document.body.dataset.maps === "concept";
    var src = concept ? button.dataset.concept : button.dataset.overlay;
    fig.setAttribute("data-word", button.dataset.k);
    if (!src) {
      overlay.hidden = true;
      overlay.removeAttribute("src");
      status.textContent = "\u201c" + button.textContent + "\u201d is not a concept of this sample";
      status.title = status.textContent;
      return;
    }
    overlay.src = src;
    overlay.hidden = false;
    var names = [];
    for (var u = start; u < end && u < tokens.length; u++) { names.push(tokens[u].textContent); }
    var what = concept ? "ConceptAttention map" : "token" + (end - start > 1 ? "s " : " ") + names.join(" + ") +
      " [" + start + (end - start > 1 ? "\u2013" + (end - 1) : "") + "]";
    status.textContent = "\u201c" + button.textContent + "\u201d \u00b7 " + what + " \u00b7 outline: mask at \u03c4 = " +
      document.body.dataset.threshold;
    status.title = status.textContent;
  }
  function pin(fig, button) {
    Array.prototype.forEach.call(fig.querySelectorAll("button.word"), function (b) { b.setAttribute("aria-pressed", b === button ? "true" : "false"); });
    fig.pinned = button || null;
    show(fig, fig.pinned);
  }
  figures.forEach(function (fig) {
    fig.pinned = null;
    var overlay = fig.querySelector("img.overlay");
    overlay.addEventListener("load", function () { fig.setAttribute("data-loaded", overlay.getAttribute("src") || ""); });
    overlay.addEventListener("error", function () { fig.setAttribute("data-failed", overlay.getAttribute("src") || ""); });
    Array.prototype.forEach.call(fig.querySelectorAll("button.word"), function (b) {
      b.addEventListener("mouseenter", function () { show(fig, b); });
      b.addEventListener("focus", function () { show(fig, b); });
      b.addEventListener("mouseleave", function () { show(fig, fig.pinned); });
      b.addEventListener("blur", function () { show(fig, fig.pinned); });
      b.addEventListener("click", function () { pin(fig, fig.pinned === b ? null : b); });
    });
  });
  function find(fig, word) {
    var buttons = fig.querySelectorAll("button.word");
    if (/^-?\d+$/.test(word)) { var k = +word; if (k < 0) { k += buttons.length; } return buttons[k] || null; }
    for (var i = 0; i < buttons.length; i++) { if (buttons[i].textContent.toLowerCase() === word.toLowerCase()) { return buttons[i]; } }
    return null;
  }
  function maps(kind) {
    document.body.dataset.maps = kind;
    Array.prototype.forEach.call(document.querySelectorAll("button.maps"), function (b) {
      b.setAttribute("aria-pressed", b.dataset.maps === kind ? "true" : "false");
    });
    figures.forEach(function (fig) { show(fig, fig.pinned); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("button.maps"), function (b) {
    b.addEventListener("click", function () { maps(b.dataset.maps); });
  });
  var query = new URLSearchParams(window.location.search);
  if (query.get("maps") === "concept" && document.querySelector("button.maps")) { maps("concept"); }
  var word = query.get("word");
  if (word !== null) {
    var only = query.get("sample");
    figures.forEach(function (fig) {
      if (only === null || fig.dataset.index === only) { var b = find(fig, word); if (b) { pin(fig, b); } }
    });
  }
})();
