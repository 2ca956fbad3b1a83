import type { FastifyInstance } from 'fastify';
import { isRawBinaryWrite, readRawBinary } from './binary.ts';
import { FhirError } from './errors.ts';
import { parseFhirJson } from './json-body.ts';
import { fromXml } from './xml.ts';

/** FHIR bodies up to this size; a larger one is refused with 413 before it is read. */
export const FHIR_BODY_LIMIT = 16 * 1024 * 1024;

/**
 * What a FHIR endpoint accepts as a body: FHIR JSON or XML (checked for hostile shapes), JSON Patch, search forms,
 * and a Binary's own bytes in any other media type.
 */
export function fhirBodyParsers(app: FastifyInstance): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(
    ['application/fhir+json', 'application/json', 'application/json+fhir', 'application/json-patch+json'],
    { parseAs: 'string', bodyLimit: FHIR_BODY_LIMIT },
    (_req, body, done) => {
      if (body === '') {
        done(new FhirError(400, 'structure', 'request body is empty'), undefined);
        return;
      }
      try {
        done(null, parseFhirJson(body as string));
      } catch (err) {
        done(err as FhirError, undefined);
      }
    },
  );
  app.addContentTypeParser(
    ['application/fhir+xml', 'application/xml', 'application/xml+fhir'],
    { parseAs: 'string', bodyLimit: FHIR_BODY_LIMIT },
    async (_req: unknown, body: string | Buffer) => fromXml(body as string),
  );
  // POST [type]/_search sends its parameters as a form (http.html#search).
  app.addContentTypeParser(
    'application/x-www-form-urlencoded',
    { parseAs: 'string', bodyLimit: 1024 * 1024 },
    (_req, body, done) => done(null, [...new URLSearchParams(body as string)]),
  );
  app.addContentTypeParser('*', { bodyLimit: FHIR_BODY_LIMIT }, (req, payload, done) => {
    if (isRawBinaryWrite(req)) {
      readRawBinary(req, payload).then(
        (raw) => done(null, raw),
        (err: Error) => done(err, undefined),
      );
      return;
    }
    done(
      new FhirError(
        415,
        'not-supported',
        `Content-Type ${req.headers['content-type'] ?? '(none)'} is not supported; send application/fhir+json or application/fhir+xml`,
      ),
      undefined,
    );
  });
}
