// The image table of the inspector report: filters, search, sorting and paging over the JSON data block.
// Every value from the data goes into the page with textContent or as an attribute value, never as markup.
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("report-data").textContent);
  var FIELDS = data.fields;
  var KINDS = data.kinds;
  var DISPLAY = data.display;
  var RUNS = data.runs;
  var ROWS = data.rows;
  var MISMATCH = {};
  data.mismatches.forEach(function (o) { MISMATCH[o] = true; });
  var COMPARE = RUNS.length > 1;
  var OUTSIDE = {
    model: "the model's value is not one of the declared values",
    catalogue: "the catalogue's value is not one of the declared values",
    both: "neither value is one of the declared values"
  };

  var state = {
    mismatches: false, field: "", outcome: "", value: "", change: "", search: "",
    confusion: null, sortKey: "n", sortDir: 1, page: 0, pageSize: 50, expanded: {}
  };

  function $(id) { return document.getElementById(id); }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // ------------------------------------------------------------------------------------ values

  var MONEY = new Intl.NumberFormat("en", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  function fmtNumber(value) {
    return typeof value === "number" ? MONEY.format(value) : String(value);
  }

  var NUMERIC_SIZE = /^\d+(\.\d+)?$/;

  function sizeOrder(a, b) {
    var na = NUMERIC_SIZE.test(a), nb = NUMERIC_SIZE.test(b);
    if (na && nb) return parseFloat(a) - parseFloat(b);
    if (na !== nb) return na ? -1 : 1;
    return a < b ? -1 : a > b ? 1 : 0;
  }

  function isEmpty(value) {
    if (value === null || value === undefined || value === "") return true;
    if (typeof value === "object") return Object.keys(value).length === 0;
    return false;
  }

  // How a field's values are drawn (the kind's `display`): "text", "amount", "quantity" or "sizes".
  function displayOf(field) { return DISPLAY[field] || "text"; }

  function fmtValue(field, value) {
    if (isEmpty(value)) return "";
    var shown = displayOf(field);
    if (shown === "sizes") {
      return Object.keys(value).sort(sizeOrder).map(function (size) {
        return size + ": " + fmtNumber(value[size]);
      }).join(" · ");
    }
    if (shown === "amount") return fmtNumber(value);
    if (shown === "quantity") return (String(+value.toPrecision(6)) + " " + KINDS[field][1]).trim();
    return String(value);
  }

  // ------------------------------------------------------------------------------ row facts

  function scopedFields() { return state.field ? [state.field] : FIELDS; }

  function runMismatch(run, fields) {
    if (!run) return false;
    if (run.err) return true;
    return fields.some(function (f) { return MISMATCH[run.o[f]] === true; });
  }

  function runHasOutcome(run, fields, outcome) {
    if (!run) return false;
    if (outcome === "error") return !!run.err;
    if (run.err) return false;
    return fields.some(function (f) { return run.o[f] === outcome; });
  }

  function nCorrect(run) {
    if (!run || run.err) return -1;
    return FIELDS.filter(function (f) { return run.o[f] === "correct"; }).length;
  }

  function nScored(run) {
    if (!run) return 0;
    return FIELDS.filter(function (f) {
      return run.o[f] !== undefined && run.o[f] !== "both_empty" && run.o[f] !== "unreadable";
    }).length;
  }

  function nBad(run) {
    if (!run) return -1;
    if (run.err) return FIELDS.length + 1;
    return FIELDS.filter(function (f) { return MISMATCH[run.o[f]] === true; }).length;
  }

  function haystack(row) {
    if (row._hay === undefined) {
      var parts = [row.p];
      if (row.truth) FIELDS.forEach(function (f) { parts.push(fmtValue(f, row.truth[f])); });
      if (row.tr) parts.push(String(row.tr[1] || ""));
      row.runs.forEach(function (run) {
        if (!run) return;
        FIELDS.forEach(function (f) { parts.push(fmtValue(f, run.v[f])); });
        parts.push(run.raw || "", run.err || "");
      });
      row._hay = parts.join("\n").toLowerCase();
    }
    return row._hay;
  }

  function visible(row) {
    var fields = scopedFields();
    if (state.mismatches && !row.runs.some(function (run) { return runMismatch(run, fields); })) return false;
    if (state.outcome && !row.runs.some(function (run) { return runHasOutcome(run, fields, state.outcome); })) return false;
    if (state.value && valueOption(state.value.field, row.g[state.value.field]) !== state.value.option) return false;
    if (state.confusion) {
      var run = row.runs[state.confusion.run], f = state.confusion.field;
      if (!run || row.tk[f] !== state.confusion.truth || run.pk[f] !== state.confusion.pred) return false;
    }
    if (state.change) {
      // Better/worse only where both runs looked at the image and the catalogue has a row for it.
      var both = row.runs[0] && row.runs[1] && row.truth;
      if ((state.change === "better" || state.change === "worse") && !both) return false;
      var a = nCorrect(row.runs[0]), b = nCorrect(row.runs[1]);
      if (state.change === "better" && !(b > a)) return false;
      if (state.change === "worse" && !(b < a)) return false;
      if (state.change === "differ" && !differs(row)) return false;
    }
    if (state.search && haystack(row).indexOf(state.search) < 0) return false;
    return true;
  }

  function differs(row) {
    var a = row.runs[0], b = row.runs[1];
    if (!a || !b) return true;
    if (!!a.err !== !!b.err) return true;
    return FIELDS.some(function (f) { return fmtValue(f, a.v[f]) !== fmtValue(f, b.v[f]); });
  }

  // ----------------------------------------------------------------------------------- sort

  function sortValue(row, key) {
    var first = row.runs[0] || row.runs[1];
    switch (key) {
      case "n": return row._n;
      case "path": return row.p.toLowerCase();
      case "score": return nBad(row.runs[0]) * 100 + Math.max(0, nBad(row.runs[1] || null));
      case "latency": return first && typeof first.ms === "number" ? first.ms : null;
      case "price": return first && typeof first.v.price === "number" ? first.v.price : null;
      default: {
        var text = first ? fmtValue(key, first.v[key]) : "";
        return text ? text.toLowerCase() : null;
      }
    }
  }

  function sortRows(rows) {
    var key = state.sortKey, dir = state.sortDir;
    var keyed = rows.map(function (row) { return [sortValue(row, key), row._n, row]; });
    keyed.sort(function (x, y) {
      var a = x[0], b = y[0];
      if (a === null && b === null) return x[1] - y[1];
      if (a === null) return 1;  // empty values last in both directions
      if (b === null) return -1;
      if (a < b) return -dir;
      if (a > b) return dir;
      return x[1] - y[1];
    });
    return keyed.map(function (k) { return k[2]; });
  }

  // ---------------------------------------------------------------------------------- cells

  function outcomeLabel(outcome) { return outcome ? outcome.replace("_", " ") : "not scored"; }

  function valueLine(field, run, letter) {
    var outcome = run.o[field];
    var line = el("div", "val o-" + (outcome || "none"));
    line.title = (letter ? letter + ": " : "") + outcomeLabel(outcome);
    if (letter) line.appendChild(el("b", "letter letter-" + letter, letter));
    var value = run.v[field];
    if (displayOf(field) === "sizes" && !isEmpty(value)) {
      Object.keys(value).sort(sizeOrder).forEach(function (size) {
        var chip = el("span", "size o-" + (run.sz[size] || outcome || "none"), size + ": " + fmtNumber(value[size]));
        chip.title = "size " + size + ": " + outcomeLabel(run.sz[size]);
        line.appendChild(chip);
      });
    } else {
      var text = fmtValue(field, value);
      line.appendChild(el("span", text ? "v" : "v nothing", text || "—"));
    }
    if (MISMATCH[outcome]) line.appendChild(el("span", "tag", outcomeLabel(outcome)));
    return line;
  }

  function fieldCell(row, field) {
    var td = el("td", "field f-" + field);
    var shown = COMPARE ? row.runs : [row.runs[0]];
    var allRight = true;
    shown.forEach(function (run, i) {
      var letter = COMPARE ? RUNS[i].letter : "";
      var line;
      if (!run || run.err) {
        line = el("div", "val " + (run ? "o-error" : "o-none"));
        line.title = (letter ? letter + ": " : "") + (run ? "failed" : "not in this run");
        if (letter) line.appendChild(el("b", "letter letter-" + letter, letter));
        line.appendChild(el("span", "v nothing", run ? "failed" : "—"));
      } else {
        line = valueLine(field, run, letter);
        if (["correct", "both_empty", "unreadable"].indexOf(run.o[field]) < 0) allRight = false;
      }
      td.appendChild(line);
    });
    if (!COMPARE && shown[0] && !shown[0].err) td.className += " o-" + (shown[0].o[field] || "none");
    var decided = decisionsFor(row, field);
    if (decided.length) {
      var mark = el("div", "decision");
      mark.appendChild(el("span", "label", "decided"));
      mark.appendChild(el("span", "v", decided.join(" · ")));
      td.appendChild(mark);
    }
    if (row.truth) {
      // The catalogue's value: spelled out where the model got it wrong, on hover where it got it right.
      var truthText = fmtValue(field, row.truth[field]);
      td.title = "catalogue: " + (truthText || "(empty)");
      if (!allRight) {
        var truthLine = el("div", "truth");
        truthLine.appendChild(el("span", "label", "catalogue"));
        truthLine.appendChild(el("span", truthText ? "v" : "v nothing", truthText || "—"));
        td.appendChild(truthLine);
      }
    }
    return td;
  }

  // The review's decisions on the first run (review.js owns them: stored ones and this browser's), shown in the
  // field's cell; a size table's cell shows its sizes' decisions.
  function decisionsFor(row, field) {
    var review = window.inspectorReview;
    if (!review || !row.runs[0]) return [];
    var names = displayOf(field) === "sizes"
      ? Object.keys(row.runs[0].sz || {}).map(function (size) { return "size_price:" + size; })
      : [field];
    var texts = [];
    names.forEach(function (name) {
      var current = review.decisionOf(row.s, name);
      if (!current) return;
      var text = (name === field ? "" : name.slice("size_price:".length) + ": ") + review.label(current.decision);
      texts.push(current.corrected ? text + " → " + current.corrected : text);
    });
    return texts;
  }

  function errorCell(row) {
    var td = el("td", "error-cell");
    td.colSpan = FIELDS.length;
    row.runs.forEach(function (run, i) {
      if (!run) return;
      var box = el("div", "error-box");
      if (COMPARE) box.appendChild(el("b", "letter letter-" + RUNS[i].letter, RUNS[i].letter));
      box.appendChild(el("strong", null, "Failed: "));
      box.appendChild(el("span", null, run.err));
      td.appendChild(box);
    });
    if (row.truth) {
      var truth = el("div", "truth");
      truth.appendChild(el("span", "label", "catalogue"));
      var parts = FIELDS.map(function (f) { return fmtValue(f, row.truth[f]); }).filter(Boolean);
      truth.appendChild(el("span", "v", parts.join(" · ") || "—"));
      td.appendChild(truth);
    }
    return td;
  }

  function resultCell(row) {
    var td = el("td", "result");
    row.runs.forEach(function (run, i) {
      if (!COMPARE && i > 0) return;
      var letter = COMPARE ? RUNS[i].letter : "";
      var line = el("div", "score");
      if (letter) line.appendChild(el("b", "letter letter-" + letter, letter));
      if (!run) line.appendChild(el("span", "muted", "—"));
      else if (run.err) line.appendChild(el("span", "badge o-error", "failed"));
      else if (!row.truth) line.appendChild(el("span", "muted", "no row"));
      else {
        var bad = nBad(run);
        line.appendChild(el("span", "badge " + (bad ? "o-wrong" : "o-correct"),
          nCorrect(run) + "/" + nScored(run)));
      }
      td.appendChild(line);
    });
    var toggle = el("button", "raw-toggle", state.expanded[row._n] ? "▾ raw" : "▸ raw");
    toggle.type = "button";
    toggle.setAttribute("aria-expanded", state.expanded[row._n] ? "true" : "false");
    toggle.addEventListener("click", function () {
      if (state.expanded[row._n]) delete state.expanded[row._n]; else state.expanded[row._n] = true;
      render();
    });
    td.appendChild(toggle);
    return td;
  }

  function detailRow(row, nColumns) {
    var tr = el("tr", "detail");
    var td = el("td");
    td.colSpan = nColumns;
    var wrap = el("div", "detail-grid");
    row.runs.forEach(function (run, i) {
      if (!run) return;
      var box = el("div", "raw-box");
      box.appendChild(el("h4", null, "Raw answer" + (COMPARE ? " · " + RUNS[i].letter + " · " + RUNS[i].label : "")));
      if (run.err) box.appendChild(el("pre", "err", run.err));
      box.appendChild(el("pre", "raw", run.raw === null || run.raw === undefined ? "(no answer)" : run.raw));
      if (run.fr.length) {
        var table = el("table", "fr");
        var head = el("tr");
        ["field", "outcome", "model", "catalogue", "score", "confidence", "note"].forEach(function (h) { head.appendChild(el("th", null, h)); });
        table.appendChild(head);
        run.fr.forEach(function (r) {
          var line = el("tr");
          line.appendChild(el("td", null, r[0]));
          var outcome = el("td");
          outcome.appendChild(el("span", "badge o-" + r[1], outcomeLabel(r[1])));
          line.appendChild(outcome);
          line.appendChild(el("td", null, r[2] === null ? "—" : r[2]));
          line.appendChild(el("td", null, r[3] === null ? "—" : r[3]));
          line.appendChild(el("td", "num", typeof r[4] === "number" ? r[4].toFixed(3) : ""));
          line.appendChild(el("td", "num", typeof r[5] === "number" ? (100 * r[5]).toFixed(1) + "%" : ""));
          line.appendChild(el("td", r[6] ? "outside" : null, r[6] ? OUTSIDE[r[6]] : ""));
          table.appendChild(line);
        });
        box.appendChild(table);
      }
      wrap.appendChild(box);
    });
    td.appendChild(wrap);
    tr.appendChild(td);
    return tr;
  }

  // The path as text, with line-break opportunities after each "/" so long paths wrap between folders.
  function pathText(path) {
    var node = el("div", "path");
    path.split("/").forEach(function (part, i, parts) {
      node.appendChild(document.createTextNode(i < parts.length - 1 ? part + "/" : part));
      if (i < parts.length - 1) node.appendChild(document.createElement("wbr"));
    });
    return node;
  }

  function imageRow(row) {
    var tr = el("tr", "row");
    tr.dataset.path = row.p;
    tr.dataset.n = String(row._n);
    if (row.runs.some(function (run) { return run && run.err; })) tr.className += " failed";
    else if (row.runs.some(function (run) { return runMismatch(run, FIELDS); })) tr.className += " mismatch";
    tr.appendChild(el("td", "num narrow muted", row._n));

    var thumbCell = el("td", "thumb-col");
    if (row.t) {
      var img = el("img", "thumb");
      img.src = row.t;
      img.alt = "";
      img.loading = "lazy";
      img.title = "Click to enlarge";
      img.addEventListener("click", function () { openLightbox(row); });
      thumbCell.appendChild(img);
    } else {
      thumbCell.appendChild(el("div", "no-thumb", "no image"));
    }
    tr.appendChild(thumbCell);

    var file = el("td", "file");
    file.appendChild(pathText(row.p));
    var facts = [];
    if (row.wh) facts.push(row.wh[0] + "×" + row.wh[1]);
    if (row.tr) facts.push("CSV row " + row.tr[0] + (row.tr[1] ? " · " + row.tr[1] : ""));
    else facts.push("no catalogue row");
    file.appendChild(el("div", "facts", facts.join(" · ")));
    tr.appendChild(file);

    var allFailed = row.runs.every(function (run) { return !run || run.err; });
    if (allFailed) tr.appendChild(errorCell(row));
    else FIELDS.forEach(function (f) { tr.appendChild(fieldCell(row, f)); });

    tr.appendChild(resultCell(row));
    var ms = el("td", "num narrow muted");
    row.runs.forEach(function (run, i) {
      if (!COMPARE && i > 0) return;
      ms.appendChild(el("div", null, run && typeof run.ms === "number" ? Math.round(run.ms) : "—"));
    });
    tr.appendChild(ms);
    return tr;
  }

  // --------------------------------------------------------------------------------- render

  // review.js (loaded after this script) announces itself and every decision: redraw the page's decisions.
  document.addEventListener("inspector-decisions", function () { render(); });

  var tbody = document.querySelector("#rows tbody");
  var nColumns = document.querySelectorAll("#rows thead th").length;

  // The filtered, sorted rows; recomputed only when a filter or the sort order changes, not per page.
  var shownCache = null;

  function render() {
    if (!shownCache) shownCache = sortRows(ROWS.filter(visible));
    var shown = shownCache;
    var pages = Math.max(1, Math.ceil(shown.length / state.pageSize));
    state.page = Math.min(state.page, pages - 1);
    var start = state.page * state.pageSize;
    var page = shown.slice(start, start + state.pageSize);

    var fragment = document.createDocumentFragment();
    page.forEach(function (row) {
      fragment.appendChild(imageRow(row));
      if (state.expanded[row._n]) fragment.appendChild(detailRow(row, nColumns));
    });
    if (!page.length) {
      var empty = el("tr", "empty-row");
      var td = el("td", null, ROWS.length ? "No image matches these filters." : "This run has no images.");
      td.colSpan = nColumns;
      empty.appendChild(td);
      fragment.appendChild(empty);
    }
    tbody.replaceChildren(fragment);

    var total = ROWS.length;
    $("count").textContent = shown.length === total
      ? total.toLocaleString("en") + " images"
      : shown.length.toLocaleString("en") + " of " + total.toLocaleString("en") + " images match";
    $("page").textContent = shown.length
      ? (start + 1).toLocaleString("en") + "–" + (start + page.length).toLocaleString("en") +
        " · page " + (state.page + 1) + " of " + pages
      : "";
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;

    document.querySelectorAll("#rows thead th[data-sort]").forEach(function (th) {
      var active = th.dataset.sort === state.sortKey;
      th.setAttribute("aria-sort", active ? (state.sortDir > 0 ? "ascending" : "descending") : "none");
      th.classList.toggle("active-field", !!state.field && th.dataset.field === state.field);
    });
  }

  // ------------------------------------------------------------------------------- controls

  function update(changes) {
    Object.keys(changes).forEach(function (k) { state[k] = changes[k]; });
    state.page = 0;
    shownCache = null;
    render();
  }

  // The value filter lists each categorical field's values. A field's "no value" key is "": give it a value
  // no normalised value can have, and prefix the field ("category=hats": field names have no "=") so that
  // equal values of two fields stay apart.
  function valueOption(field, key) { return field + "=" + (key === "" ? "(none)" : key); }

  var valueSelect = $("filter-value");
  data.groups.forEach(function (group) {
    var optgroup = el("optgroup");
    optgroup.label = group[1];
    group[2].forEach(function (c) {
      var option = el("option", null, c[1] + " (" + c[2] + ")");
      option.value = valueOption(group[0], c[0]);
      optgroup.appendChild(option);
    });
    valueSelect.appendChild(optgroup);
  });

  $("filter-mismatches").addEventListener("change", function (e) { update({ mismatches: e.target.checked }); });
  $("filter-field").addEventListener("change", function (e) { update({ field: e.target.value }); });
  $("filter-outcome").addEventListener("change", function (e) { update({ outcome: e.target.value }); });
  valueSelect.addEventListener("change", function (e) {
    var option = e.target.value;
    update({ value: option ? { field: option.slice(0, option.indexOf("=")), option: option } : "" });
  });
  if ($("filter-change")) {
    $("filter-change").addEventListener("change", function (e) { update({ change: e.target.value }); });
  }
  var searchTimer = null;
  $("search").addEventListener("input", function (e) {
    clearTimeout(searchTimer);
    var value = e.target.value.trim().toLowerCase();
    searchTimer = setTimeout(function () { update({ search: value }); }, ROWS.length > 2000 ? 200 : 60);
  });
  $("page-size").addEventListener("change", function (e) { update({ pageSize: parseInt(e.target.value, 10) }); });
  $("prev").addEventListener("click", function () { state.page -= 1; render(); scrollToTable(); });
  $("next").addEventListener("click", function () { state.page += 1; render(); scrollToTable(); });

  function scrollToTable() {
    var top = $("images").getBoundingClientRect().top;
    if (top < 0) $("images").scrollIntoView();
  }

  document.querySelectorAll("#rows thead th[data-sort]").forEach(function (th) {
    th.tabIndex = 0;
    function sort() {
      if (state.sortKey === th.dataset.sort) state.sortDir = -state.sortDir;
      else { state.sortKey = th.dataset.sort; state.sortDir = th.dataset.sort === "score" ? -1 : 1; }
      shownCache = null;
      render();
    }
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (e) { if (e.key === "Enter") sort(); });
  });

  var chip = $("confusion-chip");
  function setConfusion(selection, text) {
    chip.hidden = !selection;
    chip.firstElementChild.textContent = text || "";
    update({ confusion: selection });
    if (selection) $("images").scrollIntoView();
  }
  chip.querySelector("button").addEventListener("click", function () { setConfusion(null); });
  document.querySelectorAll("table.confusion td[data-pred]").forEach(function (td) {
    td.addEventListener("click", function () {
      var table = td.closest("table");
      var run = parseInt(table.dataset.run, 10);
      setConfusion({ run: run, field: table.dataset.field, truth: td.dataset.truth, pred: td.dataset.pred },
        (COMPARE ? RUNS[run].letter + ": " : "") + td.title.replace(/: show these images$/, ""));
    });
  });

  $("reset").addEventListener("click", function () {
    ["filter-mismatches"].forEach(function (id) { $(id).checked = false; });
    ["filter-field", "filter-outcome", "filter-value", "filter-change", "search"].forEach(function (id) {
      if ($(id)) $(id).value = "";
    });
    chip.hidden = true;
    update({ mismatches: false, field: "", outcome: "", value: "", change: "", search: "", confusion: null });
  });

  // ------------------------------------------------------------------------------- lightbox

  var lightbox = $("lightbox");
  function openLightbox(row) {
    lightbox.querySelector("img").src = row.t;
    lightbox.querySelector("figcaption").textContent = row.p + (row.wh ? "  ·  " + row.wh[0] + "×" + row.wh[1] + " px" : "");
    lightbox.hidden = false;
  }
  lightbox.addEventListener("click", function () { lightbox.hidden = true; });
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape") lightbox.hidden = true;
    if (e.key === "/" && document.activeElement !== $("search") && document.activeElement.tagName !== "INPUT") {
      e.preventDefault();
      $("search").focus();
    }
  });

  ROWS.forEach(function (row, i) { row._n = i + 1; });
  render();
  document.documentElement.dataset.ready = String(Math.round(performance.now()));
})();
