// The dashboard's behaviour: the live-link badge, and the charts (uPlot) fed by the stream's "metrics" event.
// Sections of HTML are swapped in by htmx's SSE extension; this file only draws. Every text it writes goes
// through textContent, never innerHTML, so names from apps stay text.
(function () {
  "use strict";
  var charts = {}; // "app/service" -> {box, plots: {kind: {el, plot}}, decisions, list}
  var WINDOW = 120; // seconds shown at most: the gateway's metrics window
  var MIN_SPAN = 30; // seconds shown at least
  var since = null; // the oldest point of any chart: young charts fill the width
  var SERIES = {
    requests: { title: "requests/s", unit: "req/s", columns: [1, 4], labels: ["requests/s", "5xx/s"],
                colors: ["#2563eb", "#dc2626"] },
    latency: { title: "response time p50 and p95 (access log)", unit: "ms", columns: [1, 2],
               labels: ["p50", "p95"], colors: ["#7c3aed", "#db2777"] },
    load: { title: "in flight and queued", unit: "requests", columns: [2, 3], labels: ["in flight", "queued"],
            colors: ["#0891b2", "#ea580c"] },
    replicas: { title: "replicas (lines: scaling decisions)", unit: "replicas", columns: [1, 2],
                labels: ["desired", "ready"], colors: ["#64748b", "#16a34a"] }
  };

  function text(tag, value, cls) {
    var el = document.createElement(tag);
    el.textContent = value;
    if (cls) { el.className = cls; }
    return el;
  }

  function setLink(state, label) {
    var link = document.getElementById("link");
    if (link) { link.className = "badge " + state; link.textContent = label; }
  }

  function decisionLines(getDecisions) { // a uPlot plugin: one vertical line per scaling decision
    return { hooks: { draw: function (u) {
      var ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = "#d97706";
      ctx.lineWidth = 2;
      getDecisions().forEach(function (d) {
        var x = u.valToPos(d.time, "x", true);
        if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) { return; }
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
      });
      ctx.restore();
    } } };
  }

  function clockLabels(u, splits) { // one row: 04:37:20, no date
    return splits.map(function (t) {
      return new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    });
  }

  function makePlot(el, kind, chart) {
    var spec = SERIES[kind];
    var series = [{}].concat(spec.labels.map(function (label, i) {
      return { label: label, stroke: spec.colors[i], width: 2, value: function (u, v) {
        return v == null ? "–" : v.toFixed(v % 1 ? 2 : 0) + " " + spec.unit; } };
    }));
    var opts = { width: Math.max(el.clientWidth, 240), height: 150, series: series, legend: { live: false },
                 scales: { x: { time: true, range: function () {
                   var now = Date.now() / 1000;
                   var start = since === null ? now - MIN_SPAN : Math.min(since, now - MIN_SPAN);
                   return [Math.max(now - WINDOW, start), now];
                 } }, y: { range: function (u, min, max) { return [0, Math.max(1, max)]; } } },
                 axes: [{ space: 70, values: clockLabels }, { label: spec.unit, size: 50 }],
                 plugins: kind === "replicas" ? [decisionLines(function () { return chart.decisions; })] : [] };
    return new uPlot(opts, [[]].concat(spec.labels.map(function () { return []; })), el);
  }

  function block(key, kinds) {
    if (charts[key]) { return charts[key]; }
    var box = document.createElement("article");
    box.className = "chart-block";
    box.dataset.key = key;
    box.appendChild(text("h3", key));
    var chart = { box: box, plots: {}, decisions: [], public: kinds.length > 1 };
    document.getElementById("charts").appendChild(box);
    kinds.forEach(function (kind) {
      var figure = document.createElement("figure");
      figure.appendChild(text("figcaption", SERIES[kind].title));
      var el = document.createElement("div");
      el.className = "chart chart-" + kind;
      figure.appendChild(el);
      box.appendChild(figure);
      chart.plots[kind] = { el: el, plot: makePlot(el, kind, chart) };
    });
    chart.list = document.createElement("ul");
    chart.list.className = "decisions";
    box.appendChild(chart.list);
    charts[key] = chart;
    return chart;
  }

  function columns(data, picks) {
    return [data[0] || []].concat(picks.map(function (i) { return data[i] || []; }));
  }

  function oldest(all) {
    var firsts = [];
    Object.keys(all).forEach(function (key) {
      [all[key].traffic, all[key].latency, all[key].replicas].forEach(function (cols) {
        if (cols && cols[0] && cols[0].length) { firsts.push(cols[0][0]); }
      });
    });
    return firsts.length ? Math.min.apply(null, firsts) : null;
  }

  function update(all) {
    since = oldest(all);
    Object.keys(charts).forEach(function (key) {
      if (!(key in all)) { charts[key].box.remove(); delete charts[key]; }
    });
    Object.keys(all).forEach(function (key) {
      var data = all[key];
      if (charts[key] && charts[key].public !== data.public) { charts[key].box.remove(); delete charts[key]; }
      var chart = block(key, data.public ? Object.keys(SERIES) : ["replicas"]);
      chart.decisions = data.decisions;
      if (data.public) {
        ["requests", "load"].forEach(function (kind) {
          show(chart.plots[kind], columns(data.traffic, SERIES[kind].columns));
        });
        show(chart.plots.latency, columns(data.latency, SERIES.latency.columns));
      }
      show(chart.plots.replicas, columns(data.replicas, [1, 2]));
      chart.list.replaceChildren.apply(chart.list, data.decisions.slice(-5).reverse().map(function (d) {
        return text("li", new Date(d.time * 1000).toLocaleTimeString() + " " + d.kind + ": " + d.message);
      }));
    });
  }

  function show(entry, data) {
    entry.plot.setData(data);
    var first = data[1] || [];
    entry.el.dataset.points = String(first.length);
    entry.el.dataset.max = String(first.length ? Math.max.apply(null, first) : 0);
  }

  window.addEventListener("resize", function () {
    Object.keys(charts).forEach(function (key) {
      Object.keys(charts[key].plots).forEach(function (kind) {
        var entry = charts[key].plots[kind];
        entry.plot.setSize({ width: Math.max(entry.el.clientWidth, 240), height: 150 });
      });
    });
  });

  document.addEventListener("htmx:sseOpen", function () { setLink("ok", "live"); });
  document.addEventListener("htmx:sseError", function () { setLink("warn", "reconnecting"); });
  document.addEventListener("htmx:sseBeforeMessage", function (evt) {
    var target = evt.target;
    if (target.id === "metrics") {
      evt.preventDefault();
      update(JSON.parse(evt.detail.data));
    } else if (target.contains(document.activeElement) && document.activeElement.tagName === "INPUT") {
      evt.preventDefault(); // someone is typing a replica count: keep the form as it is for now
    }
  });
})();
