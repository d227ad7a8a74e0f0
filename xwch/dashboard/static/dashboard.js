// Live updates without reloading. The coordinator tells, on the event stream
// /dashboard/events, when what the pages show has changed; the page then fetches its own
// content again (?fragment=1, rendered and escaped by the coordinator) and puts it in place.
// No library and nothing fetched from elsewhere: the platform may run offline.
(function () {
  "use strict";
  var content = document.getElementById("content");
  var dot = document.getElementById("live");
  var fetching = false;
  var again = false;
  var updates = 0;

  function refresh() {
    if (fetching) {
      again = true; // one more fetch once this one ends, never two at once
      return;
    }
    fetching = true;
    fetch(location.pathname + "?fragment=1", { credentials: "same-origin", cache: "no-store" })
      .then(function (answer) {
        if (answer.status === 401) {
          location.reload(); // the session ended (its token revoked): show why, in full
        }
        if (!answer.ok) {
          throw new Error("HTTP " + answer.status);
        }
        return answer.text();
      })
      .then(function (html) {
        content.innerHTML = html;
        updates += 1;
        document.body.setAttribute("data-updates", String(updates));
      })
      .catch(function () {
        dot.className = "live off";
      })
      .finally(function () {
        fetching = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  if (!window.EventSource || !content) {
    return;
  }
  var events = new EventSource("/dashboard/events");
  events.onopen = function () {
    dot.className = "live on";
  };
  events.onerror = function () {
    dot.className = "live off"; // the browser reconnects by itself
  };
  events.onmessage = refresh;
})();
