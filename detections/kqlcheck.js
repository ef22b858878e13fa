// Microsoft's KQL parser and binder (@kusto/language-service-next), offline.
// stdin:  {"tables": {"EmailEvents": [["Timestamp", "datetime"], ...]}, "queries": ["...", ...]}
// stdout: [{"diagnostics": [...], "columns": [[name, type]], "statements": [...]}, ...] (one per query)
// Run by detections/kqlcheck.py; the bridge takes ~0.4 s to load, so queries come in one batch.
'use strict';
require('@kusto/language-service-next/bridge.min.js');
require('@kusto/language-service-next/Kusto.Language.Bridge.min.js');

const K = Kusto.Language;

function readStdin() {
  return require('fs').readFileSync(0, 'utf8');
}

function globalsFor(tables) {
  const symbols = Object.entries(tables).map(([name, cols]) => {
    // Column names are plain identifiers (the schema files are validated in Python), so the
    // "(a:string, b:datetime)" schema text cannot be malformed by a name.
    const schema = '(' + cols.map(([c, t]) => `['${c}']:${t}`).join(', ') + ')';
    return new K.Symbols.TableSymbol.$ctor7(name, schema, null);
  });
  const db = new K.Symbols.DatabaseSymbol.$ctor1('db', symbols, false);
  return K.GlobalState.Default.WithDatabase(db);
}

function lineCol(text, offset) {
  const before = text.slice(0, offset).split('\n');
  return [before.length, before[before.length - 1].length + 1];
}

function statementsOf(code) {
  const out = [];
  const list = code.Syntax && code.Syntax.Statements;
  if (!list) return out;
  for (let i = 0; i < list.Count; i++) {
    const el = list.getItem(i).Element;
    const item = { kind: System.Enum.toString(K.Syntax.SyntaxKind, el.Kind) };
    if (el.Name && el.Expression) {
      item.name = el.Name.SimpleName;
      item.value_kind = System.Enum.toString(K.Syntax.SyntaxKind, el.Expression.Kind);
      const v = el.Expression.LiteralValue;
      if (v !== undefined && v !== null && (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean')) {
        item.value = v;
      }
    }
    out.push(item);
  }
  return out;
}

function check(text, globals) {
  const code = K.KustoCode.ParseAndAnalyze(text, globals);
  const diags = code.GetDiagnostics();
  const diagnostics = [];
  for (let i = 0; i < diags.Count; i++) {
    const d = diags.getItem(i);
    const [line, column] = lineCol(text, d.Start);
    diagnostics.push({ severity: String(d.Severity), code: d.Code, message: d.Message, line, column });
  }
  let columns = null;
  const rt = code.ResultType;
  if (rt && rt.Columns) {
    columns = [];
    for (let i = 0; i < rt.Columns.Count; i++) {
      const c = rt.Columns.getItem(i);
      columns.push([c.Name, c.Type.Name]);
    }
  }
  return { diagnostics, columns, statements: statementsOf(code) };
}

const input = JSON.parse(readStdin());
const globals = globalsFor(input.tables || {});
process.stdout.write(JSON.stringify((input.queries || []).map((q) => check(q, globals))));
