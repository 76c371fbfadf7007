// Loaded between require.js and the ipywidgets embed manager (nb_ipywidgets_js in _config.yml), on
// pages that embed widget state, so that the embedded widgets work offline with MathJax 3.

// The embed manager finds its icon fonts beside its AMD module; without this, require.js places
// that module beside the page instead of in _static/html-manager, where book/_tools/vendor.py put it.
require.config({
  paths: {"@jupyter-widgets/html-manager/dist": new URL("html-manager", document.currentScript.src).href},
});

// The embed manager typesets widget labels with MathJax 2's MathJax.Hub.Queue. The book loads
// MathJax 3, which replaces window.MathJax (Sphinx's configuration) when it starts: give both objects
// a Hub whose Queue waits for MathJax 3 to be ready and then calls its typesetPromise.
if (window.MathJax) {
  let startupDone;
  const ready = new Promise((resolve) => { startupDone = resolve; });
  const hub = {Queue: ([, , element]) => ready.then(() => window.MathJax.typesetPromise([element]))};
  const config = window.MathJax;
  config.Hub = hub;
  config.startup = {
    ...config.startup,
    ready() {
      window.MathJax.startup.defaultReady();
      window.MathJax.Hub = hub;
      startupDone();
    },
  };
}
