// fleetprof's web UI: flame graphs (plain and differential) drawn as SVG from the tree the page
// embeds in #flame-data, and the sign-in form. A view's state (zoomed frame, search, icicle) lives
// in the URL, so a copied link opens the same view.
(function () {
  'use strict';

  var login = document.getElementById('login');
  if (login) {
    login.addEventListener('submit', function (e) {
      e.preventDefault();
      var token = document.getElementById('token').value.trim();
      document.cookie = 'fleetprof_token=' + token + '; path=/; SameSite=Strict';
      location.href = login.getAttribute('data-next') || '/';
    });
  }

  var dataEl = document.getElementById('flame-data');
  var svg = document.getElementById('flame');
  if (!dataEl || !svg) return;
  var data = JSON.parse(dataEl.textContent);
  var NS = 'http://www.w3.org/2000/svg';
  var W = 1200;
  var H = 17;
  var params = new URLSearchParams(location.search);

  function link(node, parent) {
    node.p = parent;
    var c = node.c || [];
    for (var i = 0; i < c.length; i++) link(c[i], node);
  }
  link(data.tree, null);

  function pathOf(node) {
    var names = [];
    for (var n = node; n && n.p; n = n.p) names.unshift(n.n);
    return names.join(';');
  }

  function find(path) {
    var node = data.tree;
    if (!path) return node;
    var names = path.split(';');
    for (var i = 0; i < names.length; i++) {
      var next = (node.c || []).filter(function (c) { return c.n === names[i]; })[0];
      if (!next) break;
      node = next;
    }
    return node;
  }

  function depth(node) {
    var d = 0;
    var c = node.c || [];
    for (var i = 0; i < c.length; i++) d = Math.max(d, depth(c[i]));
    return d + 1;
  }

  var focus = find(params.get('focus'));
  var search = params.get('search') || '';
  var icicle = params.get('mode') === 'icicle';
  var searchBox = document.getElementById('search');
  var icicleBox = document.getElementById('icicle');
  var matchEl = document.getElementById('match');
  var crumbs = document.getElementById('crumbs');
  var tip = document.getElementById('tip');
  if (searchBox) searchBox.value = search;
  if (icicleBox) icicleBox.checked = icicle;

  function matcher() {
    if (!search) return null;
    try {
      var re = new RegExp(search, 'i');
      return function (name) { return re.test(name); };
    } catch (e) {
      var s = search.toLowerCase();
      return function (name) { return name.toLowerCase().indexOf(s) >= 0; };
    }
  }

  function hash(name) {
    var h = 0;
    for (var i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    return h;
  }

  function fill(node, match) {
    if (match && match(node.n)) return 'rgb(220,60,220)';
    if (data.diff) {
      var base = node.b || 0;
      var d = (node.v - base) / Math.max(1, data.total);
      var i = Math.min(1, Math.abs(d) * 25);
      var k = Math.round(235 - 170 * i);
      if (Math.abs(d) < 1e-4) return 'rgb(235,235,235)';
      return d > 0 ? 'rgb(250,' + k + ',' + k + ')' : 'rgb(' + k + ',' + k + ',250)';
    }
    var h = hash(node.n);
    return 'rgb(' + (205 + (h % 50)) + ',' + (80 + ((h >> 8) % 150)) + ',' + ((h >> 16) % 55) + ')';
  }

  function pct(v) { return (100 * v / Math.max(1, data.total)).toFixed(2) + '%'; }

  function describe(node) {
    var s = node.n + ': ' + node.v + ' samples (' + pct(node.v) + ')';
    if (data.diff) {
      var base = node.b || 0;
      s += ', baseline ' + pct(base) + ', ' + (node.v >= base ? '+' : '') + (100 * (node.v - base) / Math.max(1, data.total)).toFixed(2) + ' pp';
    }
    return s;
  }

  var drawn = [];

  function draw(node, x, w, level, levels, ancestor) {
    var y = icicle ? level * H : (levels - level - 1) * H;
    var g = document.createElementNS(NS, 'g');
    g.setAttribute('class', 'frame' + (ancestor ? ' ancestor' : '') + (node === focus ? ' focus' : ''));
    g.setAttribute('data-name', node.n);
    g.setAttribute('data-i', String(drawn.length));
    drawn.push(node);
    var title = document.createElementNS(NS, 'title');
    title.textContent = describe(node);
    g.appendChild(title);
    var r = document.createElementNS(NS, 'rect');
    r.setAttribute('x', x.toFixed(2));
    r.setAttribute('y', String(y));
    r.setAttribute('width', w.toFixed(2));
    r.setAttribute('height', String(H - 1));
    r.setAttribute('fill', fill(node, matcher()));
    g.appendChild(r);
    if (w > 30) {
      var t = document.createElementNS(NS, 'text');
      t.setAttribute('x', (x + 3).toFixed(2));
      t.setAttribute('y', String(y + H - 5));
      var chars = Math.floor((w - 6) / 7);
      t.textContent = node.n.length <= chars ? node.n : node.n.slice(0, Math.max(0, chars - 2)) + '..';
      g.appendChild(t);
    }
    svg.appendChild(g);
  }

  function layout(node, x, w, level, levels) {
    draw(node, x, w, level, levels, false);
    var scale = node.v > 0 ? w / node.v : 0;
    var cx = x;
    var c = node.c || [];
    for (var i = 0; i < c.length; i++) {
      var cw = c[i].v * scale;
      if (cw >= 0.5) layout(c[i], cx, cw, level + 1, levels);
      cx += cw;
    }
  }

  function matched(node, match) {
    if (match(node.n)) return node.v;
    var sum = 0;
    var c = node.c || [];
    for (var i = 0; i < c.length; i++) sum += matched(c[i], match);
    return sum;
  }

  function render() {
    var match = matcher();
    var chain = [];
    for (var n = focus; n; n = n.p) chain.unshift(n);
    var levels = chain.length - 1 + depth(focus);
    var height = levels * H;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    drawn = [];
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + height);
    svg.setAttribute('width', '100%');
    svg.setAttribute('data-zoomed', focus === data.tree ? 'false' : 'true');
    for (var i = 0; i < chain.length - 1; i++) draw(chain[i], 0, W, i, levels, true);
    layout(focus, 0, W, chain.length - 1, levels);
    if (matchEl) {
      if (match) {
        var m = matched(data.tree, match);
        matchEl.textContent = 'matched ' + m + ' samples (' + pct(m) + ' of all)';
      } else {
        matchEl.textContent = '';
      }
    }
    if (crumbs) {
      crumbs.textContent = focus === data.tree ? '' : 'Zoomed into ' + chain.slice(1).map(function (n) { return n.n; }).join(' → ');
    }
  }

  function save() {
    var q = new URLSearchParams(location.search);
    var f = pathOf(focus);
    if (f) q.set('focus', f); else q.delete('focus');
    if (search) q.set('search', search); else q.delete('search');
    if (icicle) q.set('mode', 'icicle'); else q.delete('mode');
    history.replaceState(null, '', location.pathname + '?' + q.toString());
  }

  svg.addEventListener('click', function (e) {
    var g = e.target.closest ? e.target.closest('g.frame') : null;
    if (!g) return;
    focus = drawn[Number(g.getAttribute('data-i'))] || data.tree;
    save();
    render();
  });
  svg.addEventListener('mousemove', function (e) {
    var g = e.target.closest ? e.target.closest('g.frame') : null;
    if (tip) tip.textContent = g ? describe(drawn[Number(g.getAttribute('data-i'))]) : '';
  });
  if (searchBox) {
    searchBox.addEventListener('input', function () {
      search = searchBox.value;
      save();
      render();
    });
  }
  if (icicleBox) {
    icicleBox.addEventListener('change', function () {
      icicle = icicleBox.checked;
      save();
      render();
    });
  }
  var reset = document.getElementById('reset');
  if (reset) {
    reset.addEventListener('click', function () {
      focus = data.tree;
      save();
      render();
    });
  }
  render();
})();
