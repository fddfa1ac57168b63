// The report's review view: disagreements ranked by the model's confidence, the least sure answers, and the
// inspector's decisions (kept in localStorage per database + run + image + field, downloadable as CSV).
// Every value from the data goes into the page with textContent or as an attribute value, never as markup.
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("review-data").textContent);
  var DECISIONS = data.decisions;
  var LABELS = { catalogue_wrong: "catalogue is wrong", model_wrong: "model is wrong", both_fine: "both fine" };
  var PAGE = 25;
  var DISAGREE = { wrong: true, spurious: true, missed: true };
  var ITEMS = data.items.map(function (x) {
    return { sha: x[0], path: x[1], field: x[2], outcome: x[3], model: x[4], catalogue: x[5], conf: x[6], key: x[7] };
  });
  var state = { field: "", min: 0, max: 100, shown: { disagreements: PAGE, unsure: PAGE } };

  // Thumbnails travel once, in the image table's data; find them by path when it has them.
  var thumbs = {};
  try {
    JSON.parse(document.getElementById("report-data").textContent).rows.forEach(function (row) {
      if (row.p && row.t) thumbs[row.p] = row.t;
    });
  } catch (e) { /* no image table data: the review works without thumbnails */ }

  function $(id) { return document.getElementById(id); }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // ------------------------------------------------------------------------------------ decisions

  var PREFIX = "inspector-review\t" + data.db + "\t" + data.run + "\t";

  function storageKey(item) { return PREFIX + item.sha + "\t" + item.field; }

  var storage = null;
  try { storage = window.localStorage; } catch (e) { storage = null; }

  function saved(item) {
    if (!storage) return null;
    var text = storage.getItem(storageKey(item));
    if (!text) return null;
    try { return JSON.parse(text); } catch (e) { return null; }
  }

  function stored(item) {
    var value = data.stored[item.sha + "\t" + item.field];
    return value ? { decision: value[0], corrected: value[1] || "", at: null, stored: true } : null;
  }

  // The browser's decision wins over the one imported into the database (it is newer).
  function decisionOf(item) { return saved(item) || stored(item); }

  function decide(item, decision, corrected) {
    if (!storage) return;
    if (!decision) storage.removeItem(storageKey(item));
    else storage.setItem(storageKey(item), JSON.stringify({
      decision: decision, corrected: decision === "catalogue_wrong" ? corrected : "",
      at: new Date().toISOString()
    }));
    refreshDownload();
    announce();
  }

  // The image table (report.js) shows the decisions too: it asks here, and redraws when told.
  window.inspectorReview = {
    decisionOf: function (sha, field) { return decisionOf({ sha: sha, field: field }); },
    label: function (decision) { return LABELS[decision] || decision; }
  };
  function announce() { document.dispatchEvent(new CustomEvent("inspector-decisions")); }

  // ------------------------------------------------------------------------------------ lists

  function pct(conf) { return conf === null || conf === undefined ? "–" : (100 * conf).toFixed(1) + "%"; }

  function inRange(item) {
    if (state.field && item.field !== state.field && !(state.field === "size_price" && item.field.indexOf("size_price:") === 0)) return false;
    if (item.conf === null || item.conf === undefined) return state.min === 0 && state.max === 100;
    var value = 100 * item.conf;
    return value >= state.min && value <= state.max;
  }

  function byConfidence(direction) {
    return function (a, b) {
      var x = a.conf, y = b.conf;
      if (x === null && y === null) return a.path < b.path ? -1 : 1;
      if (x === null) return 1;
      if (y === null) return -1;
      return direction * (x - y) || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0);
    };
  }

  function itemNode(item, list) {
    var li = el("li", "review-item");
    li.dataset.sha = item.sha;
    li.dataset.field = item.field;
    if (thumbs[item.path]) {
      var img = el("img");
      img.src = thumbs[item.path];
      img.alt = "";
      img.loading = "lazy";
      li.appendChild(img);
    } else {
      li.appendChild(el("div", "no-thumb", "no image"));
    }
    var what = el("div", "what");
    what.appendChild(el("span", "conf", pct(item.conf)));
    what.appendChild(document.createTextNode(" · " + item.field + " · "));
    what.appendChild(el("span", "badge o-" + item.outcome, item.outcome.replace("_", " ")));
    what.appendChild(el("div", "path muted", item.path + (item.key ? "  ·  catalogue " + item.key : "")));
    li.appendChild(what);
    var values = el("div", "values");
    values.appendChild(el("span", null, "model: " + (item.model === null ? "—" : item.model)));
    values.appendChild(el("span", null, "catalogue: " + (item.catalogue === null ? "—" : item.catalogue)));
    li.appendChild(values);

    var current = decisionOf(item);
    var controls = el("div", "decide");
    // One radio group per list entry: the same field can be in both lists.
    var name = "decision-" + list + "-" + item.sha + "-" + item.field;
    var corrected = el("input");
    corrected.type = "text";
    corrected.className = "corrected";
    corrected.placeholder = "corrected value (optional)";
    corrected.value = current && current.corrected ? current.corrected : "";
    corrected.disabled = !(current && current.decision === "catalogue_wrong");
    DECISIONS.forEach(function (decision) {
      var label = el("label");
      var radio = el("input");
      radio.type = "radio";
      radio.name = name;
      radio.value = decision;
      radio.checked = !!current && current.decision === decision;
      radio.addEventListener("change", function () {
        decide(item, decision, corrected.value.trim());
        render();  // the same field may be in the other list too
      });
      label.appendChild(radio);
      label.appendChild(document.createTextNode(" " + LABELS[decision]));
      controls.appendChild(label);
    });
    corrected.addEventListener("change", function () {
      decide(item, "catalogue_wrong", corrected.value.trim());
      render();
    });
    controls.appendChild(corrected);
    var clear = el("button", "link", "clear");
    clear.type = "button";
    clear.addEventListener("click", function () { decide(item, null); render(); });
    controls.appendChild(clear);
    if (current && current.stored && !saved(item)) controls.appendChild(el("span", "stored", "imported"));
    li.appendChild(controls);
    if (current) li.classList.add("decided");
    return li;
  }

  function fill(listId, moreId, items, key) {
    var list = $(listId);
    var fragment = document.createDocumentFragment();
    items.slice(0, state.shown[key]).forEach(function (item) { fragment.appendChild(itemNode(item, key)); });
    if (!items.length) fragment.appendChild(el("li", "muted", "Nothing to review with these filters."));
    list.replaceChildren(fragment);
    $(moreId).hidden = items.length <= state.shown[key];
  }

  function render() {
    var shown = ITEMS.filter(inRange);
    var disagreements = shown.filter(function (item) { return DISAGREE[item.outcome]; }).sort(byConfidence(-1));
    var unsure = shown.filter(function (item) { return item.conf !== null && item.conf !== undefined; })
      .sort(byConfidence(1));
    fill("review-disagreements", "review-more-disagreements", disagreements, "disagreements");
    fill("review-unsure", "review-more-unsure", unsure, "unsure");
    $("review-count").textContent = disagreements.length + " disagreements · " + unsure.length + " answers with a confidence";
    var all = ITEMS.filter(function (item) { return DISAGREE[item.outcome]; });
    var decided = all.filter(function (item) { return decisionOf(item); }).length;
    $("review-decided").textContent = "decided " + decided + " of " + all.length;
  }

  // ------------------------------------------------------------------------------------ CSV

  var COLUMNS = ["run_id", "sha256", "field", "decision", "corrected_value", "path", "catalogue_key",
    "model_value", "catalogue_value", "confidence", "decided_at"];

  // csv cells: begin
  // A text a spreadsheet would run as a formula (OWASP's CSV-injection list = + - @ tab CR, and LF) gets a quote
  // in front; plain numbers stay. The same rule as inspector/csvfiles.py formula_safe: `review import` takes the
  // quote off again, so the value typed here is the value stored.
  var FORMULA = /^'*[=+\-@\t\r\n]/;
  var NUMBER = /^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;

  function csvCell(value) {
    var text = value === null || value === undefined ? "" : String(value);
    if (typeof value === "string" && FORMULA.test(text) && !NUMBER.test(text)) text = "'" + text;
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }
  // csv cells: end

  function decisionsCsv() {
    var lines = [COLUMNS.join(",")];
    ITEMS.forEach(function (item) {
      var current = decisionOf(item);
      if (!current) return;
      lines.push([data.run, item.sha, item.field, current.decision, current.corrected || "", item.path,
        item.key, item.model, item.catalogue, item.conf, current.at || ""].map(csvCell).join(","));
    });
    return lines.join("\r\n") + "\r\n";
  }

  function refreshDownload() {
    $("review-download").href = "data:text/csv;charset=utf-8," + encodeURIComponent(decisionsCsv());
  }

  // ------------------------------------------------------------------------------------ controls

  var fields = [];
  ITEMS.forEach(function (item) {
    var name = item.field.indexOf("size_price:") === 0 ? "size_price" : item.field;
    if (fields.indexOf(name) < 0) fields.push(name);
  });
  fields.forEach(function (name) {
    var option = el("option", null, name.replace("_", " "));
    option.value = name;
    $("review-field").appendChild(option);
  });
  $("review-field").addEventListener("change", function (e) { state.field = e.target.value; render(); });
  function bound(id, fallback) {
    var value = parseFloat($(id).value);
    return isNaN(value) ? fallback : Math.max(0, Math.min(100, value));
  }
  $("review-min").addEventListener("change", function () { state.min = bound("review-min", 0); render(); });
  $("review-max").addEventListener("change", function () { state.max = bound("review-max", 100); render(); });
  $("review-more-disagreements").addEventListener("click", function () { state.shown.disagreements += PAGE; render(); });
  $("review-more-unsure").addEventListener("click", function () { state.shown.unsure += PAGE; render(); });

  render();
  refreshDownload();
  announce();
  document.documentElement.dataset.reviewReady = "1";
})();
