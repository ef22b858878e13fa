"""Detection rules as code: rule files, parameters, query backends and scans."""
