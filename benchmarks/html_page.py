"""The HTML report page's fixed parts: its style, the script a headless browser reads back, its content
security policy (nothing loads from anywhere), and how to read it."""

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12px}th,td{border:1px solid #ccc;padding:2px 6px;text-align:left}
th{background:#f2f2f2}tr.failed td,tr.unavailable td,tr.unsupported td{color:#999}
figure{margin:1.5em 0}img{max-width:100%}figcaption,.missing{color:#555;font-size:13px}.machine{color:#444}"""

# Counts the images that decoded, for a headless browser to read back from the dumped DOM.
SCRIPT = """window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.dataset.plotsRendered = String(ok.length);
  document.body.dataset.plotsTotal = String(imgs.length);
});"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

HOW_TO_READ = (
    "Latency is per call at the batch size shown, after warm-up, pooled over every timed run of every fresh "
    "process. Its 95% interval (and a speed-up's) is built across processes, the variation that moves a "
    "figure from one run to the next, when there were two or more; with one process it only describes that "
    "process's runs. A speed-up is baseline median / this median (&gt; 1: faster); (n.s.) means its interval "
    "includes 1, so this run cannot tell the two apart. Compare figures within one run only."
)
