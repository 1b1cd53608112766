(function () {
  window.ltErrors = [];
  window.addEventListener("error", function (e) { window.ltErrors.push(String(e.message)); });
  var data = JSON.parse(document.getElementById("lt-data").textContent);
  var charts = JSON.parse(document.getElementById("lt-charts").textContent);
  function rows(columns) {
    var keys = Object.keys(columns), n = keys.length ? columns[keys[0]].length : 0, out = [];
    for (var i = 0; i < n; i++) {
      var row = {};
      for (var k = 0; k < keys.length; k++) row[keys[k]] = columns[keys[k]][i];
      out.push(row);
    }
    return out;
  }
  window.ltViews = {};
  var jobs = charts.map(function (chart) {
    var spec = chart.spec;
    spec.datasets = spec.datasets || {};
    chart.data.forEach(function (name) { spec.datasets[name] = rows(data[name]); });
    var el = document.getElementById("chart-" + chart.name);
    return vegaEmbed(el, spec, {renderer: "svg", actions: false}).then(function (result) {
      window.ltViews[chart.name] = result.view;
    }, function (err) {
      el.innerHTML = '<p class="error">chart failed: ' + String(err) + "</p>";
      throw err;
    });
  });
  Promise.all(jobs).then(function () { document.body.dataset.ready = "ok"; },
    function (err) {
      console.error(err);
      window.ltErrors.push(String(err));
      document.body.dataset.ready = "error";
    });
})();
