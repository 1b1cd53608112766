"""``lt report``: one self-contained HTML page, checked as text and in a real browser.

The browser tests open the page in headless Chromium (Debian's ``chromium``; ``make test``
installs it as root) with the network cut off (a dead proxy, offline emulation, and every
request the page makes recorded), driven over the Chrome DevTools Protocol: no console
errors, every chart drawn with marks in it, a screenshot, and a hover that shows a known
cell's numbers. Without Chromium (or websocket-client) they skip, saying why.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_report import cell

from ltcli.cli.main import cli
from ltcli.core import atomic
from ltcli.results import page
from ltcli.storage.store import CellKey, Store

pytestmark = pytest.mark.unit

MASK = {"fc1": {"kernel": np.ones((4, 3), np.float32)}}
FULL = {
    "data": {"dataset": "mnist"},
    "model": {"name": "lenet300"},
    "train": {"lr": 0.0012, "iterations": 200},
    "prune": {"method": "magnitude", "rate": 0.5},
}


def make_run(root: Path, name: str, cells: list[dict], full: dict | None = None) -> str:
    """A run named `name` in the store at `root` holding `cells`, with descriptor `full`."""
    run_id = hashlib.sha256(name.encode()).hexdigest()
    full = full or FULL
    record = {"run_id": run_id, "hashed": full, "full": full}
    atomic.write_json(root / run_id / "descriptor.json", record)
    atomic.write_json(root / run_id / "meta.json", {"experiment": "hand", "names": [name]})
    store = Store(root)
    for metrics in cells:
        key = CellKey(metrics["replicate"], metrics["level"], metrics["member"])
        store.write_cell(run_id, key, MASK, metrics)
    return run_id


def layers(level: int, empty: bool = False) -> dict:
    return {
        "fc1/kernel": [0 if empty else round(1200 * 0.5**level), 1200],
        "out/kernel": [round(100 * 0.75**level), 100],
    }


# The known cell: level 1's tickets (replicates 0-2) reach 96, 98 and 97% at early stop:
# mean 97.00, sample std 1.00, n 3.
KNOWN_ACC = (0.96, 0.98, 0.97)


def imp_cells() -> list[dict]:
    cells = []
    for r in range(3):
        cells.append(cell(r, 0, acc=0.95 + 0.005 * r, stop=900, layers=layers(0)))
        cells.append(
            cell(
                r,
                0,
                "spawn-0",
                spawn_iteration=100 * r,
                instability={
                    "alpha": [0, 0.5, 1],
                    "test_error": [0.05, 0.2, 0.05],
                    "instability": 0.1 / (r + 1),
                },
                layers=layers(0),
            )
        )
        for level in (1, 2, 3):
            acc = KNOWN_ACC[r] if level == 1 else 0.95 - 0.01 * level
            # As stored before the rename: "barrier" is the barrier above the line.
            barrier = {"alpha": [0, 1], "test_error": [0.05, 0.05], "barrier": 0.01 * level}
            cells.append(
                cell(
                    r,
                    level,
                    acc=acc,
                    stop=800 - 100 * level + 10 * r,
                    diverged=level == 2 and r == 2,
                    layers=layers(level),
                    level_barrier=barrier,
                )
            )
            cells.append(cell(r, level, "reinit-0", acc=0.9 - 0.02 * level, layers=layers(level)))
            collapsed = level == 3 and r == 0
            cells.append(
                cell(
                    r,
                    level,
                    "random-0",
                    acc=0.1 if collapsed else 0.88,
                    layers=layers(level, empty=collapsed),
                    **({"collapsed": ["fc1/kernel"]} if collapsed else {}),
                )
            )
            instability = {"alpha": [0, 1], "test_error": [0.05, 0.05], "instability": 0.01 * level}
            cells.append(
                cell(r, level, "stability-0", instability=instability, layers=layers(level))
            )
    return cells


def snip_cells() -> list[dict]:
    return [
        cell(r, level, acc=0.93, stop=500, layers=layers(level))
        for r in range(2)
        for level in range(4)
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, list[str]]:
    root = tmp_path_factory.mktemp("report-store")
    imp = make_run(root, "imp", imp_cells())
    snip = make_run(root, "snip", snip_cells(), {**FULL, "prune": {"method": "snip", "rate": 0.5}})
    return Store(root), [imp, snip]


@pytest.fixture(scope="module")
def html(runs) -> str:
    store, ids = runs
    return page.build(store, ids)


def page_json(text: str, element: str):
    found = re.search(rf'<script type="application/json" id="{element}">(.*?)</script>', text, re.S)
    assert found, element
    return json.loads(found.group(1))


def rows(columns: dict) -> list[dict]:
    return [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]


# -- the page as text ------------------------------------------------------------------------


def test_the_page_loads_nothing_from_the_network(html):
    """No element of the markup (outside the inline scripts' code) loads anything."""
    markup = re.sub(r"(<script\b[^>]*>).*?</script>", r"\1</script>", html, flags=re.S | re.I)
    tags = re.findall(r"<(?:script|link|img|iframe|object|embed|source)\b[^>]*>", markup, re.I)
    assert len(tags) == 4, tags  # the two data elements, the libraries, the page's script
    assert not [t for t in tags if re.search(r"\b(?:src|href)\s*=", t, re.I)]
    assert not re.search(r"@import|url\(", markup, re.I)
    assert not re.search(r"\bsrc\s*=", markup, re.I)
    assert "window.vegaEmbed=" in html  # the libraries are inline
    assert html.count("</script>") == html.count("<script")  # nothing closes a script early


def test_the_page_holds_the_known_cells_numbers(html):
    data = page_json(html, "lt-data")
    known = [
        r
        for r in rows(data["summary"])
        if r["run"] == "imp"
        and r["kind"] == "ticket"
        and r["level"] == 1
        and r["metric"] == "early_stop_test_acc"
    ]
    assert len(known) == 1
    assert known[0]["mean"] == pytest.approx(97.0)
    assert known[0]["std"] == pytest.approx(1.0)
    assert (known[0]["n"], known[0]["min"], known[0]["max"]) == (3, 96.0, 98.0)
    assert known[0]["series"] == "imp · ticket"  # several runs: labelled by run


def test_diverged_and_collapsed_cells_are_counted_and_marked(html):
    data = rows(page_json(html, "lt-data")["summary"])
    diverged = [r for r in data if r["diverged"]]
    assert {(r["run"], r["level"], r["kind"]) for r in diverged} == {("imp", 2, "ticket")}
    assert all(r["n"] == 2 for r in diverged if r["metric"] in page.SCALE)
    collapsed = {(r["level"], r["kind"]) for r in data if r["collapsed"]}
    assert collapsed == {(3, "random")}
    assert '<td class="diverged">2 (+1 diverged)</td>' in html
    assert '<td class="collapsed">3 (1 collapsed)</td>' in html
    assert re.search(r'<td class="collapsed">random-0</td>.*?fc1/kernel', html)


def test_instability_barrier_and_at_init_charts_are_there_when_the_runs_have_them(html):
    charts = [c["name"] for c in page_json(html, "lt-charts")]
    assert charts == [
        "accuracy",
        "early_stop",
        "curves",
        "instability_pm",
        "instability_k",
        "level_barrier_above_line",
        "at_init",
        "layers",
    ]
    spawn = rows(page_json(html, "lt-data")["spawn"])
    assert [(r["k"], r["mean"]) for r in spawn] == [
        (0, 10.0),
        (100, 5.0),
        (200, pytest.approx(3.33333)),
    ]
    summary = rows(page_json(html, "lt-data")["summary"])
    barriers = [r for r in summary if r["metric"] == "level_barrier_above_line"]
    assert {(r["level"], r["mean"]) for r in barriers} >= {(1, 1.0), (3, 3.0)}
    assert not [r for r in summary if r["metric"] == "level_instability"]  # none stored


def test_a_run_without_them_gets_a_note_instead(runs, tmp_path):
    store, ids = runs
    text = page.build(store, ids[1:])
    charts = [c["name"] for c in page_json(text, "lt-charts")]
    assert charts == ["accuracy", "early_stop", "curves", "at_init", "layers"]
    assert "no instability data" in text


def test_the_hyperparameters_show_the_differences_from_the_first_run(html):
    assert '<td class="differs">snip</td>' in html
    assert "prune.method  magnitude -&gt; snip" in html


PACKAGE_FILES = ("templates/report.html.j2", "templates/parts.html.j2")
PACKAGE_FILES += ("static/report.css", "static/report.js")


def test_the_templates_css_and_script_are_package_files_the_page_inlines(html):
    """The page is rendered from the package's own files (found as package data, as an
    installed wheel holds them), and inlines its CSS and script whole."""
    files = resources.files("ltcli.results.page")
    texts = {name: files.joinpath(name).read_text(encoding="utf-8") for name in PACKAGE_FILES}
    assert all(texts.values())
    assert f"<style>\n{texts['static/report.css']}</style>" in html
    assert f"<script>\n{texts['static/report.js']}</script></body></html>\n" in html
    assert html.startswith("<!DOCTYPE html>\n") and html.count("<!DOCTYPE") == 1


def test_every_chart_is_valid_vega_lite(runs, monkeypatch):
    """Altair checks each spec against the Vega-Lite schema (off by default: it is slow)."""
    monkeypatch.setattr(page, "VALIDATE_SPECS", True)
    store, ids = runs
    assert page.build(store, ids)


def test_long_curves_keep_at_most_max_curve_points(tmp_path):
    long = cell(0, 0)
    n = 2 * page.MAX_CURVE_POINTS + 7
    long["curve"] = {k: [0.5] * n for k in ("val_loss", "val_acc", "test_loss", "test_acc")}
    long["curve"]["iteration"] = [10 * (i + 1) for i in range(n)]
    store_id = make_run(tmp_path, "long", [long])
    data = rows(page_json(page.build(Store(tmp_path), [store_id]), "lt-data")["curves"])
    iterations = [r["iteration"] for r in data]
    assert len(iterations) <= page.MAX_CURVE_POINTS + 1 and iterations[-1] == 10 * n


def test_a_reproduce_run_gets_the_papers_claims_table(tmp_path):
    """A run `lt reproduce lenet --budget small` made (its alias says so): the claims of the
    paper's LeNet figure, with their verdicts."""
    cells = []
    for r in range(2):
        for level in range(8):
            pm = 100 * 0.8**level
            acc = 0.97 + 0.002 * level
            stop = 1000 - 80 * level
            cells.append(cell(r, level, acc=acc, stop=stop, percent_remaining=pm))
            if level:
                cells.append(cell(r, level, "reinit-0", acc=0.96, stop=1200, percent_remaining=pm))
    run_id = make_run(tmp_path, "reproduce-lenet-small", cells)
    text = page.build(Store(tmp_path), [run_id])
    assert "The paper&#x27;s claims" in text and "Frankle &amp; Carbin 2019" in text
    assert '<td class="held">held</td>' in text
    plain = make_run(tmp_path, "plain", cells)
    assert "paper&#x27;s claims" not in page.build(Store(tmp_path), [plain])
    assert '<td class="held">' in page.build(Store(tmp_path), [plain], figure="lenet")


def test_write_is_atomic_and_rewrite_runs_after_each_stored_group(runs, tmp_path):
    store, ids = runs
    path = tmp_path / "r.html"
    flushed, notes = [], []
    receiver = page.Rewrite(store, ids[:1], path, note=notes.append)
    receiver.stored([], lambda: flushed.append(True))
    assert flushed == [True] and path.read_text().startswith("<!DOCTYPE html>")
    assert receiver.writes == 1 and not notes
    assert not list(tmp_path.glob(".*.tmp"))
    broken = page.Rewrite(store, ids[:1], tmp_path / "gone" / "sub" / "r.html", note=notes.append)
    (tmp_path / "gone").write_text("a file where a folder should be")
    broken.stored([], lambda: None)  # does not raise: training goes on
    assert broken.writes == 0 and len(notes) == 1 and "not written" in notes[0]


# -- the command line ------------------------------------------------------------------------


def test_lt_report_writes_the_page(runs, tmp_path):
    store, _ = runs
    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        cli, ["report", "imp", "snip", "--store", str(store.root), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.is_file() and f"wrote {out}" in result.stderr
    assert "lt report: imp, snip" in out.read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["-o", "report.png"], "use .html or .htm"),
        (["-o", "missing/report.html"], "does not exist"),
        (["--figure", "vgg"], "--figure vgg: unknown"),
    ],
)
def test_lt_report_checks_its_input_before_reading_the_store(tmp_path, args, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["report", "nosuchrun", "--store", "nowhere", *args])
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.integration
def test_lt_run_report_rewrites_the_page_after_every_level(tmp_path, write_spec, monkeypatch):
    """`lt run --report PATH`: a real two-level run; the page is rewritten as each level is
    stored (seeing that level's cells), and once more when the run ends."""
    written = []
    original = page.write

    def counting(store, run_ids, path, **options):
        written.append(sum(1 for _ in store.finished_cells(run_ids[0])))
        return original(store, run_ids, path, **options)

    monkeypatch.setattr(page, "write", counting)
    out = tmp_path / "live.html"
    args = ["run", str(write_spec()), "--rounds", "1", "--store", str(tmp_path / "s")]
    result = CliRunner().invoke(cli, [*args, "--report", str(out)])
    assert result.exit_code == 0, result.output
    assert written == [1, 2, 2] and out.is_file()
    bad = CliRunner().invoke(cli, [*args[:-1], str(tmp_path / "t"), "--report", "x.pdf"])
    assert bad.exit_code == 2 and "--report x.pdf" in bad.stderr
    assert not (tmp_path / "t").exists()


# -- in a real browser -----------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium driven over the DevTools protocol (one page, flat session), its
    network cut: every request goes to a dead proxy, and the page is emulated offline."""

    def __init__(self, binary: str, width: int = 1400, height: int = 1000):
        websocket = pytest.importorskip("websocket", reason="needs websocket-client")
        self.profile = Path(tempfile.mkdtemp(prefix="lt-chromium-"))
        log = self.profile / "stderr.log"
        args = [
            binary,
            "--headless",
            "--no-sandbox",  # as root, in a container
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--proxy-server=127.0.0.1:9",
            f"--window-size={width},{height}",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}",
            "about:blank",
        ]
        with log.open("w") as handle:
            self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=handle)
        deadline = time.monotonic() + 60
        while not (found := re.search(r"DevTools listening on (ws://\S+)", log.read_text())):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail(f"chromium did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        self.socket = websocket.create_connection(found.group(1), timeout=60, suppress_origin=True)
        self.events: list[dict] = []
        self.last = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self.last += 1
        message = {"id": self.last, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        while True:
            reply = json.loads(self.socket.recv())
            if reply.get("id") == self.last:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply.get("result", {})
            self.events.append(reply)

    def page(self, method: str, **params) -> dict:
        return self.call(method, session=self.session, **params)

    def evaluate(self, expression: str):
        found = self.page(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in found, found["exceptionDetails"]
        return found["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 30):
        deadline = time.monotonic() + seconds
        while not (value := self.evaluate(expression)):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.05)
        return value

    def close(self) -> None:
        if getattr(self, "socket", None):
            self.socket.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(runs, tmp_path_factory):
    """The report of the fabricated runs, opened once in Chromium with the network off."""
    if CHROMIUM is None:
        pytest.skip(
            "needs Debian's chromium package (make test installs it where apt runs as root)"
        )
    store, ids = runs
    path = page.write(store, ids, tmp_path_factory.mktemp("report") / "report.html")
    chrome = Browser(CHROMIUM)
    try:
        for domain in ("Runtime", "Log", "Network", "Page"):
            chrome.page(f"{domain}.enable")
        chrome.page(
            "Network.emulateNetworkConditions",
            offline=True,
            latency=0,
            downloadThroughput=-1,
            uploadThroughput=-1,
        )
        chrome.page("Page.navigate", url=path.resolve().as_uri())
        chrome.ready = chrome.wait_for("document.body && document.body.dataset.ready", 60)
        chrome.path = path
        yield chrome
    finally:
        chrome.close()


def events(chrome: Browser, method: str) -> list[dict]:
    return [e["params"] for e in chrome.events if e.get("method") == method]


@pytest.mark.system
def test_the_page_renders_without_console_errors(browser):
    assert browser.ready == "ok"
    assert browser.evaluate("window.ltErrors") == []
    assert events(browser, "Runtime.exceptionThrown") == []
    console = [
        (e["type"], [a.get("value") for a in e["args"]])
        for e in events(browser, "Runtime.consoleAPICalled")
        if e["type"] in ("error", "assert", "warning")
    ]
    assert console == []  # Vega warns on the console about charts it cannot draw right
    logged = [e["entry"] for e in events(browser, "Log.entryAdded")]
    assert [e for e in logged if e["level"] in ("error", "warning")] == []


@pytest.mark.system
def test_the_page_made_no_network_request(browser):
    urls = [e["request"]["url"] for e in events(browser, "Network.requestWillBeSent")]
    assert urls and all(u.startswith(("file:", "data:", "blob:", "about:")) for u in urls), urls


@pytest.mark.system
def test_every_chart_renders_with_marks_in_it(browser):
    counts = browser.evaluate(
        """Object.fromEntries([...document.querySelectorAll('.chart')].map(c => [c.dataset.chart,
           c.querySelectorAll('svg g.role-mark > *').length]))"""
    )
    assert set(counts) == set(browser.evaluate("Object.keys(window.ltViews)"))
    assert len(counts) == 8 and all(n > 0 for n in counts.values()), counts
    # the accuracy chart: a point per level, member kind and run at the chosen accuracy
    points = browser.evaluate(
        """document.querySelectorAll('#chart-accuracy svg g.mark-symbol.role-mark path').length"""
    )
    assert points >= 4 * 1 + 3 * 2 + 4 * 1  # imp ticket, reinit and random; snip's ticket


@pytest.mark.system
def test_a_screenshot_is_taken(browser, tmp_path):
    height = min(browser.evaluate("document.documentElement.scrollHeight"), 4000)
    browser.page(
        "Emulation.setDeviceMetricsOverride",
        width=1400,
        height=height,
        deviceScaleFactor=1,
        mobile=False,
    )
    try:
        shot = browser.page("Page.captureScreenshot", format="png")
    finally:  # back to the window's own size, where the hover test points
        browser.page("Emulation.clearDeviceMetricsOverride")
    path = tmp_path / "report.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    image = Image.open(io.BytesIO(path.read_bytes())).convert("L")
    assert image.size[0] == 1400 and image.size[1] > 1000
    assert image.getextrema()[0] < 100  # not a blank page: something dark is drawn


def hover(browser: Browser, selector_js: str) -> dict[str, str]:
    """Moves the mouse to the centre of the element `selector_js` finds and returns the
    tooltip's rows (key -> value)."""
    box = browser.evaluate(
        f"""(() => {{ const el = {selector_js}; if (!el) return null;
             el.scrollIntoView({{block: 'center'}});
             const r = el.getBoundingClientRect();
             const x = r.x + r.width / 2, y = r.y + r.height / 2;
             return {{x, y, hit: document.elementFromPoint(x, y) === el}}; }})()"""
    )
    assert box and box["hit"], f"no such mark, or another element covers it: {box}"
    for dx in (0, 0.5):  # a second, slightly moved event: the tooltip follows pointer moves
        browser.page("Input.dispatchMouseEvent", type="mouseMoved", x=box["x"] + dx, y=box["y"])
    browser.wait_for("document.querySelector('#vg-tooltip-element.visible') !== null", seconds=10)
    return browser.evaluate(
        """Object.fromEntries([...document.querySelectorAll('#vg-tooltip-element tr')].map(
             tr => [tr.querySelector('.key').textContent.replace(/:$/, ''),
                    tr.querySelector('.value').textContent]))"""
    )


@pytest.mark.system
def test_hovering_the_known_cell_shows_its_mean_std_and_n(browser):
    found = hover(
        browser,
        """[...document.querySelectorAll('#chart-accuracy svg g.mark-symbol.role-mark path')]
           .find(p => p.__data__ && p.__data__.datum && p.__data__.datum.series === 'imp · ticket'
                 && p.__data__.datum.level === 1)""",
    )
    assert found["series"] == "imp · ticket" and found["level"] == "1"
    assert found["test accuracy (%)"] == "97.00"
    assert (found["std"], found["n"], found["min"], found["max"]) == ("1.00", "3", "96.00", "98.00")


@pytest.mark.system
def test_a_level_picker_chooses_the_training_curves_level(browser):
    view = "window.ltViews.curves"
    levels = browser.evaluate(
        "[...document.querySelectorAll('#chart-curves select option')].map(o => o.value)"
    )
    assert levels == ["0", "1", "2", "3"]
    browser.evaluate(
        """(() => { const s = document.querySelector('#chart-curves select');
                    s.value = '3'; s.dispatchEvent(new Event('change')); })()"""
    )
    browser.wait_for(f"{view}.signal('level') == 3")
    shown = browser.evaluate(
        f"""(async () => {{ await {view}.runAsync();
              return [...document.querySelectorAll('#chart-curves svg g.mark-line.role-mark path')]
                .map(p => p.__data__.datum.level); }})()"""
    )
    assert shown and set(shown) == {3}


@pytest.mark.system
def test_the_mouse_wheel_zooms_a_chart(browser):
    domains = "[0, 1].map(i => window.ltViews.early_stop.scale(['x', 'y'][i]).domain())"
    before = browser.evaluate(domains)
    box = browser.evaluate(
        """(() => { const el = document.querySelector(
                      '#chart-early_stop svg g.mark-symbol.role-mark path');
                    el.scrollIntoView({block: 'center'}); const r = el.getBoundingClientRect();
                    return {x: r.x + 40, y: r.y + 20}; })()"""
    )
    browser.page(
        "Input.dispatchMouseEvent", type="mouseWheel", x=box["x"], y=box["y"], deltaX=0, deltaY=-300
    )
    browser.wait_for(f"JSON.stringify({domains}) !== {json.dumps(json.dumps(before))}")
    (x0, x1), (y0, y1) = browser.evaluate(domains)
    assert x1 - x0 < before[0][1] - before[0][0] and y1 - y0 < before[1][1] - before[1][0]


@pytest.mark.system
def test_clicking_a_legend_entry_shows_that_series_alone(browser):
    box = browser.evaluate(
        """(() => { const t = [...document.querySelectorAll(
                      '#chart-accuracy svg g.role-legend-label text')]
                      .find(t => t.textContent === 'imp · reinit');
                    t.scrollIntoView({block: 'center'}); const r = t.getBoundingClientRect();
                    return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()"""
    )
    for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
        browser.page(
            "Input.dispatchMouseEvent",
            type=kind,
            x=box["x"],
            y=box["y"],
            button="left",
            clickCount=1,
        )
    browser.wait_for("window.ltViews.accuracy.signal('shown') !== null")
    opacity = browser.evaluate(
        """[...document.querySelectorAll('#chart-accuracy svg g.mark-symbol.role-mark path')]
           .map(p => [p.__data__.datum.series, p.getAttribute('opacity')])"""
    )
    shown = {series for series, value in opacity if value == "1"}
    faded = {series for series, value in opacity if value != "1"}
    assert shown == {"imp · reinit"} and faded == {"imp · ticket", "imp · random", "snip · ticket"}


def test_the_levels_table_shows_flops_where_the_cells_counted_them(tmp_path):
    costly = [
        cell(0, level, layers=layers(level), training_flops=0.5**level, inference_flops=0.25)
        for level in range(2)
    ]
    run_id = make_run(tmp_path, "costly", costly)
    html = page.build(Store(tmp_path), [run_id])
    assert "<th>training FLOPs x</th>" in html and "<th>inference FLOPs x</th>" in html
    assert "<td>0.500</td>" in html and "<td>0.250</td>" in html
    old = make_run(tmp_path, "old", snip_cells())  # stored before lt counted FLOPs
    assert "FLOPs x" not in page.build(Store(tmp_path), [old])
