import type { FastifyInstance, FastifyRequest } from 'fastify';
import sax from 'sax';
import { FhirError } from './errors.ts';
import { FHIR_XML, type FhirFormat, negotiateFormat } from './format.ts';
import { MAX_JSON_DEPTH, parseFhirJson } from './json-body.ts';

const FHIR_NS = 'http://hl7.org/fhir';
const XHTML_NS = 'http://www.w3.org/1999/xhtml';

/** An element as far as fidelity is concerned: name, attributes, and children (text only inside xhtml). */
interface Node {
  name: string;
  attrs: string;
  children: (Node | string)[];
}

/** JSON keeps a decimal's value, not its spelling (`1.50` is 1.5), in XML bodies as in JSON ones. */
const numberish = (v: string) => (/^-?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(v) ? String(Number(v)) : v);

/**
 * Parses XML strictly into a tree: well-formed, one root, no DTD (and so no entity of any kind beyond XML's
 * five — the XXE defence is that nothing is ever resolved), bounded depth.
 */
function treeOf(text: string): Node {
  const parser = sax.parser(true, { xmlns: false, position: true });
  const stack: Node[] = [];
  let root: Node | undefined;
  let xhtmlDepth = 0;
  const fail = (message: string): never => {
    throw new FhirError(400, 'structure', `request body is not FHIR XML: ${message}`);
  };
  parser.ondoctype = () => fail('a DTD (<!DOCTYPE>) is not allowed');
  parser.onopentag = (tag) => {
    const attrs = Object.entries(tag.attributes as Record<string, string>)
      .filter(([k]) => k !== 'xmlns' || xhtmlDepth > 0)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}=${JSON.stringify(k === 'value' && xhtmlDepth === 0 ? numberish(v) : v)}`)
      .join(' ');
    const node: Node = { name: tag.name, attrs, children: [] };
    if (tag.name === 'div' && (tag.attributes as Record<string, string>).xmlns === XHTML_NS) xhtmlDepth++;
    else if (xhtmlDepth > 0) xhtmlDepth++;
    const parent = stack[stack.length - 1];
    if (parent) parent.children.push(node);
    else if (root) fail('more than one root element');
    else {
      if ((tag.attributes as Record<string, string>).xmlns !== FHIR_NS)
        fail(`the root element must be in the FHIR namespace (xmlns="${FHIR_NS}")`);
      root = node;
    }
    stack.push(node);
    if (stack.length > MAX_JSON_DEPTH) fail(`elements nest deeper than ${MAX_JSON_DEPTH} levels`);
  };
  parser.onclosetag = () => {
    stack.pop();
    if (xhtmlDepth > 0) xhtmlDepth--;
  };
  parser.ontext = (t) => {
    if (xhtmlDepth > 0) stack[stack.length - 1]?.children.push(t);
    else if (t.trim() !== '') fail(`text "${t.trim().slice(0, 40)}" outside an element value`);
  };
  parser.oncdata = (t) => {
    if (xhtmlDepth > 0) stack[stack.length - 1]?.children.push(t);
    else fail('CDATA outside the narrative');
  };
  parser.onprocessinginstruction = (pi) => {
    if (pi.name !== 'xml') fail(`processing instruction <?${pi.name}?> is not allowed`);
  };
  parser.onerror = (err) => fail(err.message.split('\n')[0] ?? 'malformed');
  parser.write(text).close();
  return root ?? fail('no root element');
}

/** Where two trees first differ, as a path of element names; undefined when they are the same. */
function firstDifference(a: Node, b: Node, path: string): string | undefined {
  if (a.name !== b.name || a.attrs !== b.attrs) return `${path}/${a.name}`;
  const here = `${path}/${a.name}`;
  for (let i = 0; i < a.children.length; i++) {
    const x = a.children[i] as Node | string;
    const y = b.children[i];
    if (y === undefined) return typeof x === 'string' ? here : `${here}/${x.name}`;
    if (typeof x === 'string' || typeof y === 'string') {
      if (x !== y) return here;
      continue;
    }
    const d = firstDifference(x, y, here);
    if (d) return d;
  }
  return a.children.length < b.children.length ? here : undefined;
}

/** What carevault uses of the `fhir` package (its name is shadowed by `@types/fhir` for the compiler). */
interface Converter {
  xmlToJson(xml: string): string;
  objToXml(resource: object): string;
}
type ConverterModule = { Fhir?: new () => Converter; default?: { Fhir: new () => Converter } };
const CONVERTER_PACKAGE = 'fhir';

let engine: Promise<Converter> | undefined;
/** The `fhir` package loads the R4 definitions when first used, not when the server starts. */
async function converter(): Promise<Converter> {
  engine ??= (import(CONVERTER_PACKAGE) as Promise<ConverterModule>).then((m) => {
    const F = m.Fhir ?? m.default?.Fhir;
    if (!F) throw new Error('the fhir package has no Fhir export');
    return new F();
  });
  return engine;
}

/**
 * FHIR XML → the resource as JSON, converted by the `fhir` package. That converter drops what it does not know,
 * so its result is converted back and compared with the input: an unknown, misspelled or misplaced element is
 * refused by name instead of being lost silently.
 */
export async function fromXml(text: string): Promise<unknown> {
  if (text.trim() === '') throw new FhirError(400, 'structure', 'request body is empty');
  const input = treeOf(text);
  const fhir = await converter();
  let json: string;
  try {
    json = fhir.xmlToJson(text);
  } catch (err) {
    throw new FhirError(400, 'structure', `request body is not FHIR R4 XML: ${(err as Error).message.split('\n')[0]}`);
  }
  const resource = parseFhirJson(json);
  const difference = firstDifference(input, treeOf(fhir.objToXml(resource as object)), '');
  if (difference)
    throw new FhirError(
      400,
      'structure',
      `request body is not FHIR R4 XML: ${difference} is unknown, misspelled or out of order`,
      {},
      [difference.slice(1).replace(/\//g, '.')],
    );
  return resource;
}

/** A FHIR JSON answer as FHIR XML. */
export async function toXml(json: string): Promise<string> {
  const fhir = await converter();
  return fhir.objToXml(JSON.parse(json));
}

type Negotiated = FastifyRequest & { fhirFormat: FhirFormat };

/** Content negotiation for one request (406 when neither JSON nor XML is acceptable); the answer follows it. */
export function negotiate(req: FastifyRequest): void {
  (req as Negotiated).fhirFormat = negotiateFormat(req.headers.accept, (req.query as Record<string, unknown>)._format);
}

/**
 * FHIR XML answers are the JSON answers converted at the last moment, so every route of a plugin speaks both
 * alike. Register after any other onSend hook of the plugin.
 */
export function xmlAnswers(app: FastifyInstance): void {
  app.decorateRequest('fhirFormat', 'json');
  app.addHook('onSend', async (req, reply, payload) => {
    if ((req as Negotiated).fhirFormat !== 'xml' || typeof payload !== 'string' || payload === '') return payload;
    if (!String(reply.getHeader('content-type') ?? '').startsWith('application/fhir+json')) return payload;
    void reply.type(FHIR_XML);
    return toXml(payload);
  });
}
