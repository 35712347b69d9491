// sopflow web app: small conveniences on top of pages that work without JavaScript.
// Filters apply as soon as a choice changes (the "Filter" button stays for keyboards and
// for browsers without scripts).
document.addEventListener("change", function (e) {
  var el = e.target;
  if (el.tagName === "SELECT" && el.form && el.form.classList.contains("filters") && el.form.method === "get") {
    el.form.submit();
  }
});

// The worklist keeps itself current: when a task offered to you or held by you changes
// (a colleague claims it, a new one opens), the list is read again and swapped in place.
// Without scripts, or if the stream is cut, the page still works by reloading it.
(function () {
  var list = document.getElementById("work-list");
  if (!list || !window.EventSource || !window.fetch || !window.DOMParser) return;
  var pending = null;
  function refresh() {
    pending = null;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("work-list");
        var counts = doc.querySelector("ul.counts");
        if (fresh) list.innerHTML = fresh.innerHTML;
        var old = document.querySelector("ul.counts");
        if (counts && old) old.innerHTML = counts.innerHTML;
        var status = document.getElementById("work-status");
        if (status) status.textContent = "The list was updated.";
      })
      .catch(function () {});
  }
  function soon() { if (!pending) pending = setTimeout(refresh, 300); }
  var source = new EventSource(list.getAttribute("data-live"));
  source.addEventListener("open", function () { list.setAttribute("data-listening", "yes"); });
  source.addEventListener("event", function (e) {
    try { if (JSON.parse(e.data).task) soon(); } catch (_) {}
  });
  source.addEventListener("reset", soon);
})();
