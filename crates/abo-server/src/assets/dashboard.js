// The dashboard's script, served as /static/dashboard.js: the pages carry no inline script or
// handler, so the Content-Security-Policy allows scripts only from the server's own files.
// Live updates: on each event of the stream, the page's <main> is fetched again and swapped in.
// Actions: buttons with data-act (a POST to that URL) or data-decide (an approval), sent with the
// session's CSRF token from <meta name=abo-csrf>, which each refresh renews (with the logout
// form's field): a page open across a restart of the server gets the new key's token.
(function () {
  'use strict';
  var KINDS = ['run.started', 'run.paused', 'run.resumed', 'run.finished', 'run.killed',
    'task.ready', 'task.started', 'task.backend_finished', 'task.gate', 'task.policy',
    'task.landed', 'task.retry', 'task.failed', 'task.denied', 'task.cancelled',
    'task.approval_requested', 'task.approved', 'task.rejected', 'budget.charged', 'budget.alert'];

  // Times: each <time datetime> shown in the viewer's zone with its age, kept fresh.
  function ago(ms) {
    var s = Math.round(Math.abs(ms) / 1000), span;
    if (s < 45) return 'just now';
    if (s < 3600) span = Math.round(s / 60) + ' min';
    else if (s < 86400) span = Math.round(s / 3600) + ' h';
    else { var d = Math.round(s / 86400); span = d + (d === 1 ? ' day' : ' days'); }
    return ms < 0 ? 'in ' + span : span + ' ago';
  }
  function times(root) {
    (root || document).querySelectorAll('time[datetime]').forEach(function (t) {
      var at = new Date(t.getAttribute('datetime'));
      if (isNaN(at)) return;
      t.textContent = at.toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' }) + ' (' + ago(Date.now() - at) + ')';
    });
  }
  setInterval(function () { times(); }, 30000);

  function csrfMeta(doc) { return doc.querySelector('meta[name=abo-csrf]'); }

  function live() {
    var main = document.querySelector('main');
    if (!main) return;
    // Only what comes after the page was rendered: a page replays nothing of the log it shows.
    var q = '?after=' + encodeURIComponent(main.dataset.after || '0');
    if (main.dataset.run) q += '&run=' + encodeURIComponent(main.dataset.run);
    var es = new EventSource('/v1/events/stream' + q);
    var busy = false, again = false;
    function refresh() {
      if (busy) { again = true; return; }
      busy = true;
      fetch(location.href, { credentials: 'same-origin' }).then(function (r) { return r.text(); }).then(function (t) {
        var d = new DOMParser().parseFromString(t, 'text/html');
        var m = d.querySelector('main');
        var fresh = csrfMeta(d), mine = csrfMeta(document);
        if (fresh && mine) {
          mine.content = fresh.content;
          document.querySelectorAll('input[name=_csrf]').forEach(function (i) { i.value = fresh.content; });
        }
        var typing = document.activeElement && document.activeElement.closest('textarea');
        if (m && !typing) {
          // The live tail keeps its lines and its stream across the refresh.
          var keep = main.querySelector('#live');
          main.innerHTML = m.innerHTML;
          var slot = main.querySelector('#live');
          if (keep && slot) slot.replaceWith(keep);
          times(main); clocks();
        }
      }).finally(function () { busy = false; if (again) { again = false; refresh(); } });
    }
    es.onmessage = refresh;
    KINDS.forEach(function (k) { es.addEventListener(k, refresh); });
  }

  async function act(url, body, confirmText) {
    if (confirmText && !confirm(confirmText)) return;
    var meta = csrfMeta(document);
    var r = await fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-abo-csrf': meta ? meta.content : '' },
      body: JSON.stringify(body || {}),
    });
    var t = await r.text();
    var out = document.getElementById('result');
    if (out) out.textContent = r.ok ? 'done' : t;
  }

  document.addEventListener('click', function (e) {
    var b = e.target.closest && e.target.closest('button[data-act],button[data-decide],button[data-answer]');
    if (!b) return;
    if (b.dataset.answer) {
      // An agent's question: an option by its number, or the words in the box.
      var aid = b.dataset.answer;
      if (b.dataset.choose) { act('/v1/approvals/' + encodeURIComponent(aid) + '/answer', { choose: Number(b.dataset.choose) }); return; }
      var words = document.getElementById('reason-' + aid);
      if (!words || !words.value.trim()) { alert('write an answer, or choose an option'); return; }
      act('/v1/approvals/' + encodeURIComponent(aid) + '/answer', { answer: words.value });
      return;
    }
    if (b.dataset.act) { act(b.dataset.act, {}, b.dataset.confirm); return; }
    var id = b.dataset.decide;
    var box = document.getElementById('reason-' + id);
    var reason = box ? box.value : '';
    if (!reason.trim()) { alert('a reason is required'); return; }
    var verb = b.dataset.approve === 'true' ? 'approve' : 'reject';
    act('/v1/approvals/' + encodeURIComponent(id) + '/' + verb, { reason: reason });
  });

  // An attempt's elapsed time against its timeout, ticking.
  function dur(ms) {
    var s = Math.floor(ms / 1000), m = Math.floor(s / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
    function two(n) { return (n < 10 ? '0' : '') + n; }
    if (ms < 1000) return ms + ' ms';
    if (s < 60) return s + 's';
    if (m < 60) return m + 'm ' + two(s % 60) + 's';
    if (h < 24) return h + 'h ' + two(m % 60) + 'm';
    return d + 'd ' + two(h % 24) + 'h';
  }
  function clocks() {
    document.querySelectorAll('.clock[data-since]').forEach(function (c) {
      var since = new Date(c.dataset.since), limit = Number(c.dataset.limitMs || 0);
      var el = Math.max(0, Date.now() - since);
      c.textContent = 'elapsed ' + dur(el) + (limit ? ' of ' + dur(limit) + ' (' + Math.min(100, Math.round(el / limit * 100)) + '%)' : '');
    });
  }
  setInterval(clocks, 1000);

  // A task's live tail: its transcript and logs, appended as text (never as HTML).
  var MAX_LINES = 500;
  function append(pre, lines) {
    var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    lines.forEach(function (l) {
      var d = document.createElement('span');
      d.className = 'line';
      d.textContent = l;
      pre.appendChild(d);
    });
    while (pre.childNodes.length > MAX_LINES) pre.removeChild(pre.firstChild);
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }
  function tail() {
    var box = document.getElementById('live');
    if (!box || !box.dataset.live) return;
    var es = new EventSource(box.dataset.live);
    var state = box.querySelector('.live-state');
    es.addEventListener('state', function (e) {
      var s = JSON.parse(e.data);
      if (state) state.textContent = s.status + ' · attempt ' + s.attempts + ' · ' + s.cost + (s.reason ? ' · ' + s.reason : '');
    });
    es.addEventListener('attempt', function (e) {
      var a = JSON.parse(e.data).attempt;
      append(document.getElementById('transcript'), ['— attempt ' + a + ' —']);
    });
    es.addEventListener('transcript', function (e) {
      append(document.getElementById('transcript'), JSON.parse(e.data).lines);
    });
    es.addEventListener('log', function (e) {
      var d = JSON.parse(e.data), logs = document.getElementById('logs');
      var pre = null;
      logs.querySelectorAll('pre[data-file]').forEach(function (p) { if (p.dataset.file === d.file) pre = p; });
      if (!pre) {
        var h = document.createElement('h4'); h.textContent = d.file; logs.appendChild(h);
        pre = document.createElement('pre'); pre.dataset.file = d.file; logs.appendChild(pre);
      }
      append(pre, d.lines);
    });
  }

  times();
  clocks();
  tail();
  live();
})();
