// sopflow web app: small conveniences on top of pages that work without JavaScript.
// Filters apply as soon as a choice changes (the "Filter" button stays for keyboards and
// for browsers without scripts).
document.addEventListener("change", function (e) {
  var el = e.target;
  if (el.tagName === "SELECT" && el.form && el.form.classList.contains("filters") && el.form.method === "get") {
    el.form.submit();
  }
});
