// rpcmq dashboard: local times, and a batch page that follows its batch
// through server-sent events. Text from the server is set with
// textContent only; HTML comes from the server's own (escaped) templates.
'use strict';

function localTimes(root) {
  root.querySelectorAll('time[datetime]').forEach(function (el) {
    var when = new Date(el.getAttribute('datetime'));
    if (!isNaN(when)) {
      el.title = el.textContent;
      el.textContent = when.toLocaleString();
    }
  });
}

function setText(id, value) {
  var el = document.getElementById(id);
  if (el) { el.textContent = String(value); }
}

function showProgress(p) {
  var bar = document.getElementById('bar');
  bar.max = Math.max(p.totals.total, 1);
  bar.value = p.finished;
  setText('percent', Number(p.percent).toFixed(1) + '%');
  ['done', 'failed', 'cancelled', 'running', 'pending', 'total'].forEach(
    function (name) { setText('count-' + name, p.totals[name]); });
  setText('rate', p.rate);
  var state = document.getElementById('state');
  state.textContent = p.state.replace(/_/g, ' ');
  state.className = 'state ' + p.state;
  if (p.ended_at) {
    setText('ended', new Date(p.ended_at * 1000).toLocaleString());
  }
}

function showItem(item) {
  var row = document.querySelector('tr[data-idx="' + Number(item.idx) + '"]');
  if (!row) { return; }
  var state = row.querySelector('.state');
  state.textContent = item.state;
  state.className = 'state ' + item.state;
}

function reloadItems() {
  var box = document.getElementById('dynamic');
  return fetch(box.dataset.fragment, {credentials: 'same-origin'})
    .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
    .then(function (html) { box.innerHTML = html; localTimes(box); })
    .catch(function () { /* the page still shows the totals */ });
}

function follow(live) {
  var source = new EventSource(live.dataset.events);
  var lastReload = 0;
  source.addEventListener('progress', function (e) {
    showProgress(JSON.parse(e.data));
  });
  source.addEventListener('item', function (e) {
    showItem(JSON.parse(e.data));
    // Finished items change the filters' counts and the actions: refresh
    // the table now and then, not on every event.
    var now = Date.now();
    if (now - lastReload > 3000) { lastReload = now; reloadItems(); }
  });
  source.addEventListener('end', function (e) {
    showProgress(JSON.parse(e.data));
    source.close();
    live.dataset.ended = 'yes';
    reloadItems().then(function () { document.body.dataset.batchEnded = 'yes'; });
  });
}

document.addEventListener('DOMContentLoaded', function () {
  localTimes(document);
  var live = document.getElementById('live');
  if (live) {
    if (live.dataset.ended === 'yes') {
      document.body.dataset.batchEnded = 'yes';
    }
    follow(live);
  }
});
