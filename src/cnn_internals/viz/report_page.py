"""The report's page: one jinja2 template with its style and script inline, so index.html needs
nothing but the images beside it (report.py fills it in).

Tiles are CSS sprites: an ``<i>`` per tile shows cell (--r, --c) of its layer's sheet, the
sheet chosen by the method on ``<body data-method>``; a hidden tab's sheets are not fetched.
Navigation: tabs (``#run``, ``#<layer>`` for every shown layer, conv and fully connected, then
``#classes``, ``#wrong``), a map index per layer (``#<layer>-<map>`` anchors; a unit's or a
class's row for the others), and keys: left/right arrows change the tab, 1-6 the method, j/k the
map.
"""

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ net.title }}: what each unit learned</title>
<style>
:root { --t: 44px; font-family: system-ui, sans-serif; color: #222; }
body { margin: 0; background: #fafafa; }
header { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid #ccc;
         padding: 6px 14px; }
header h1 { font-size: 17px; margin: 0 0 4px; }
nav#tabs a { display: inline-block; padding: 3px 9px; margin: 2px 2px 0 0; border: 1px solid #bbb;
             border-radius: 4px 4px 0 0; text-decoration: none; color: #124; background: #eee; font-size: 14px; }
nav#tabs a[aria-current="page"] { background: #124; color: #fff; }
nav#tabs small { opacity: .7; }
#methods { display: inline-block; margin-left: 14px; font-size: 14px; }
#methods label { margin-right: 8px; white-space: nowrap; }
.keys { font-size: 12px; color: #666; margin-left: 14px; }
main > section { padding: 8px 14px 40px; scroll-margin-top: 90px; }
h2 { font-size: 18px; margin: 10px 0 6px; }
h3 { font-size: 13px; margin: 0 0 3px; font-weight: 600; }
table { border-collapse: collapse; font-size: 13px; margin-bottom: 12px; }
th, td { border: 1px solid #ddd; padding: 2px 7px; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.confusion td { width: 34px; text-align: right; }
.index { font-size: 12px; line-height: 1.9; margin: 6px 0 10px; }
.index a { display: inline-block; min-width: 26px; text-align: center; color: #124; text-decoration: none;
           border: 1px solid #ddd; background: #fff; margin: 0 1px; }
.maps { display: flex; flex-wrap: wrap; gap: 10px; }
article.map { background: #fff; border: 1px solid #ddd; padding: 4px 6px; scroll-margin-top: 96px; }
article.map:target { outline: 3px solid #e80; }
article.map ol { display: flex; list-style: none; margin: 0; padding: 0; gap: 3px; }
article.map li { display: flex; flex-direction: column; align-items: center; gap: 1px; font-size: 10px;
                 line-height: 1.15; text-align: center; }
.unit-row { display: flex; gap: 6px; align-items: flex-start; }
figure.opt { margin: 0; font-size: 10px; text-align: center; }
i.x, i.p, i.f, i.w, i.v { display: block; width: var(--t); height: var(--t); image-rendering: pixelated;
  background-repeat: no-repeat; background-color: #888;
  background-size: calc(var(--k) * var(--g) * var(--t)) calc(var(--n) * var(--g) * var(--t));
  background-position: calc(var(--c) * var(--g) * -1 * var(--t)) calc(var(--r) * var(--g) * -1 * var(--t)); }
.filters { display: flex; flex-wrap: wrap; gap: 3px; margin-bottom: 12px; --t: 40px; }
.filters i.f { background-image: url("{{ filters.file }}"); }
.filters figure { margin: 0; font-size: 10px; text-align: center; }
.wrong { --t: 112px; }
{% if wrong.rows %}
.wrong i.w { background-image: url("{{ wrong.file }}"); }
{% endif %}
{% for layer in layers %}
{% for method, _ in methods %}
body[data-method="{{ method }}"] #{{ layer.id }} i.x { background-image: url("{{ layer.sprites[method] }}"); }
{% endfor %}
#{{ layer.id }} i.p { background-image: url("{{ layer.patches }}"); }
{% if layer.optimized %}
#{{ layer.id }} i.v { background-image: url("{{ layer.optimized_file }}"); }
{% endif %}
{% endfor %}
</style>
</head>
<body data-method="{{ default_method }}">
<header>
<h1>{{ net.title }} on {{ net.dataset }}: what each unit learned</h1>
<nav id="tabs">
<a href="#run">Run</a>
{% for layer in layers %}
<a href="#{{ layer.id }}">{{ layer.name }} <small>{{ layer.maps }}</small></a>
{% endfor %}
<a href="#wrong">Most wrong</a>
</nav>
<form id="methods">
{% for method, label in methods %}
<label><input type="radio" name="method" value="{{ method }}"{% if method == default_method %} checked{% endif %}> {{ label }}</label>
{% endfor %}
</form><span class="keys">keys: &larr; &rarr; tab, 1-{{ methods|length }} method, j / k map</span>
</header>
<main>
<section id="run">
<h2>Architecture</h2>
<table class="architecture">
<thead><tr><th>layer</th><th>type</th><th>output shape</th><th>receptive field (px)</th><th>parameters</th></tr></thead>
<tbody>
{% for row in architecture %}
<tr data-layer="{{ row.layer }}"><td>{% if row.shown %}<a href="#{{ row.shown }}">{{ row.layer }}{% if row.name %} ({{ row.name }}){% endif %}</a>{% else %}{{ row.layer }}{% endif %}</td><td>{{ row.kind }}</td><td>{{ row.shape }}</td><td>{{ row.field }}</td><td class="n" data-params="{{ row.params }}">{{ row.params|number }}</td></tr>
{% endfor %}
<tr><th colspan="4">total</th><td class="n" id="total-params" data-params="{{ total_params }}">{{ total_params|number }}</td></tr>
</tbody>
</table>
<h2>Results</h2>
<table class="metrics">
{% for key, value in metrics %}
<tr><th>{{ key }}</th><td class="n" data-key="{{ key }}">{{ value|number }}</td></tr>
{% endfor %}
</table>
<img src="curves.png" alt="{{ net.title }} loss and accuracy over {{ epochs }} epochs" width="900" height="320">
<h2>Confusion matrix ({{ data.held_out }} split; rows: true class, columns: predicted)</h2>
<table class="confusion">
<tr><th></th>{% for name in confusion.classes %}<th>{{ name }}</th>{% endfor %}</tr>
{% for row in confusion.counts %}
<tr><th>{{ confusion.classes[loop.index0] }}</th>{% for count in row %}<td style="background: rgba(18, 68, 136, {{ '%.2f'|format(0.85 * count / confusion.max) }})">{{ count }}</td>{% endfor %}</tr>
{% endfor %}
</table>
<h2>Data</h2>
<table class="data">
<tr><th>dataset</th><td>{{ net.dataset }}</td></tr>
{% for name, size in data.splits %}
<tr><th>{{ name }} split</th><td class="n">{{ size|number }} images</td></tr>
{% endfor %}
<tr><th>classes</th><td>{{ data.classes|join(", ") }}</td></tr>
<tr><th>prepared data (sha256)</th><td><code>{{ data.fingerprint }}</code></td></tr>
<tr><th>top-k mined from</th><td>{{ mined.split }} split, k = {{ mined.k }} (mine stage)</td></tr>
</table>
<h2>Params</h2>
<table class="params">
{% for key, value in settings %}
<tr><th>train.{{ net.name }}.{{ key }}</th><td>{{ value }}</td></tr>
{% endfor %}
{% for key, value in report %}
<tr><th>report.{{ net.name }}.{{ key }}</th><td>{{ value }}</td></tr>
{% endfor %}
</table>
</section>
{% for layer in layers %}
<section id="{{ layer.id }}" class="layer" hidden style="--n: {{ layer.maps }}; --k: {{ layer.k }}; --g: {{ layer.ratio }};">
{% if layer.kind == "maps" %}
<h2>{{ net.title }} {{ layer.name }}: {{ layer.maps }}{% if layer.maps < layer.total %} of {{ layer.total }}{% endif %} maps, output {{ layer.shape }}, receptive field {{ layer.field }}</h2>
<p>Each map's top {{ layer.k }} {{ mined.split }} images: above, the unit's activation projected into pixel space by the method chosen at the top, cropped to its receptive field; below, the input patch it sees. Under each: the image's index in the {{ mined.split }} split and the unit's activation.</p>
{% elif layer.kind == "units" %}
<h2>{{ net.title }} {{ layer.name }}: {{ layer.maps }}{% if layer.maps < layer.total %} of {{ layer.total }}{% endif %} units (fully connected), output {{ layer.shape }}, receptive field: {{ layer.field }}</h2>
<p>Each unit's top {{ layer.k }} {{ mined.split }} images (its value: the layer's output, before its nonlinearity): above, the unit projected into pixel space by the method chosen at the top over the whole image it sees (Grad-CAM at {{ layer.cam }}); below, the image. Under each: the image's index in the {{ mined.split }} split and the unit's value.</p>
{% else %}
<h2>{{ net.title }} classes: {{ layer.maps }} classes, each by the score the net's forward returns</h2>
<p>Each class's top {{ layer.k }} {{ mined.split }} images by its score (higher = more the class): above, the score projected into pixel space by the method chosen at the top (saliency: Simonyan et al. 2013, section 3.1; Grad-CAM at {{ layer.cam }}); below, the image. Under each: the image's index in the {{ mined.split }} split and its score.</p>
{% endif %}
{% if layer.optimized %}
<p>Left of {{ 'each of the first ' ~ layer.optimized if layer.optimized > 1 else 'the first' }}: the image optimized to excite it (feature visualization, the visualize stage; at the whole input's size, not its receptive field's), with its objective ({{ 'the class score' if layer.kind == 'classes' else "the unit's value" if layer.kind == 'units' else "the map's mean over its positions, where the tiles' values are its maximum" }}).</p>
{% endif %}
{% if filters.tab == layer.id %}
<h3>{{ filters.layer }}'s {{ filters.count }} filters ({{ filters.shape }}), each scaled to its largest weight, grey = 0</h3>
<div class="filters" style="--n: 1; --k: {{ filters.count }}; --g: {{ filters.ratio }}; --r: 0;">
{% for c in range(filters.count) %}
<figure style="--c: {{ c }};"><i class="f"></i>{{ c }}</figure>
{% endfor %}
</div>
{% endif %}
<nav class="index">{{ layer.kind }}: {% for c in range(layer.maps) %}<a href="#{{ layer.id }}-{{ c }}">{{ layer.titles[c] if layer.kind == "classes" else c }}</a>{% endfor %}</nav>
<div class="maps">
{% for units in layer.units %}
<article class="map" id="{{ layer.id }}-{{ loop.index0 }}" style="--r: {{ loop.index0 }};">
<h3>{{ layer.titles[loop.index0] }} <small>max {{ units[0].text }}</small></h3>
<div class="unit-row">
{% if loop.index0 < layer.optimized %}
<figure class="opt" title="the objective on this image: {{ 'the class score' if layer.kind == 'classes' else 'the unit' if layer.kind == 'units' else 'the mean over the positions of the map' }}"><i class="v" style="--k: 1; --n: {{ layer.optimized }}; --g: {{ layer.optimized_ratio }}; --c: 0;"></i>optimized<br>{{ layer.optimized_values[loop.index0] }}</figure>
{% endif %}
<ol>
{% for unit in units %}
<li style="--c: {{ loop.index0 }};"><i class="x"></i><i class="p"></i><span data-image="{{ unit.image }}" data-value="{{ unit.value }}">#{{ unit.image }}<br>{{ unit.text }}</span></li>
{% endfor %}
</ol>
</div>
</article>
{% endfor %}
</div>
</section>
{% endfor %}
<section id="wrong" hidden>
<h2>The {{ wrong.rows|length }} {{ wrong.split }} images the net gets most wrong (of {{ wrong.errors }} errors)</h2>
<p>Misclassified images ranked by the probability (softmax of the scores) the net gives their true class, lowest first. Grad-CAM at {{ wrong.layer }}, for the predicted class and for the true one.</p>
<table class="wrong" style="--n: {{ wrong.rows|length }}; --k: 3; --g: {{ wrong.ratio }};">
<thead><tr><th>rank</th><th>image</th><th>true</th><th>predicted</th><th>p(true)</th><th>p(predicted)</th><th>input</th><th>Grad-CAM predicted</th><th>Grad-CAM true</th></tr></thead>
<tbody>
{% for row in wrong.rows %}
<tr style="--r: {{ loop.index0 }};" data-image="{{ row.image }}"><td class="n">{{ loop.index }}</td><td class="n">{{ row.image }}</td><td>{{ row.true }}</td><td>{{ row.predicted }}</td><td class="n">{{ row.p_true }}</td><td class="n">{{ row.p_predicted }}</td>{% for c in range(3) %}<td><i class="w" style="--c: {{ c }};"></i></td>{% endfor %}</tr>
{% endfor %}
</tbody>
</table>
</section>
</main>
<script type="application/json" id="assets">{{ assets|tojson }}</script>
<script>
(function () {
  "use strict";
  var tabs = Array.prototype.slice.call(document.querySelectorAll("main > section"));
  var links = Array.prototype.slice.call(document.querySelectorAll("#tabs a"));
  var radios = Array.prototype.slice.call(document.querySelectorAll("#methods input"));

  function current() { return tabs.filter(function (t) { return !t.hidden; })[0]; }

  function show(id) {
    var target = id ? document.getElementById(id) : null;
    var tab = target ? target.closest("main > section") : null;
    tab = tab || tabs[0];
    tabs.forEach(function (t) { t.hidden = t !== tab; });
    links.forEach(function (a) {
      a.setAttribute("aria-current", a.getAttribute("href") === "#" + tab.id ? "page" : "false");
    });
    if (target && target !== tab) { target.scrollIntoView(); } else { window.scrollTo(0, 0); }
  }

  function setMethod(method) {
    document.body.dataset.method = method;
    radios.forEach(function (r) { r.checked = r.value === method; });
  }

  radios.forEach(function (r) { r.addEventListener("change", function () { setMethod(r.value); }); });
  window.addEventListener("hashchange", function () { show(decodeURIComponent(location.hash.slice(1))); });
  document.addEventListener("keydown", function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey) { return; }
    if (e.target.tagName === "INPUT" && e.key.indexOf("Arrow") === 0) { return; }
    var tab = current(), i = tabs.indexOf(tab);
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      location.hash = tabs[(i + (e.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length].id;
      e.preventDefault();
    } else if (/^[1-9]$/.test(e.key) && radios[Number(e.key) - 1]) {
      setMethod(radios[Number(e.key) - 1].value);
    } else if (e.key === "j" || e.key === "k") {
      var maps = Array.prototype.slice.call(tab.querySelectorAll("article.map"));
      if (!maps.length) { return; }
      var at = maps.indexOf(document.getElementById(decodeURIComponent(location.hash.slice(1))));
      var next = at < 0 ? 0 : Math.max(0, Math.min(maps.length - 1, at + (e.key === "j" ? 1 : -1)));
      location.hash = maps[next].id;
    }
  });
  show(decodeURIComponent(location.hash.slice(1)));
})();
</script>
</body>
</html>
"""
