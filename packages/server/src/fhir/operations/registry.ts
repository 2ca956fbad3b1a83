import type { FastifyInstance } from 'fastify';
import type { RouteHelpers } from '../route-helpers.ts';
import { docrefRoutes } from './docref.ts';
import { documentRoutes } from './document.ts';
import { everythingRoutes } from './everything.ts';
import { expandRoutes } from './expand.ts';
import { lastNRoutes } from './lastn.ts';
import { lookupRoutes } from './lookup.ts';
import { metaRoutes } from './meta.ts';
import { subsumesRoutes } from './subsumes.ts';
import { translateRoutes } from './translate.ts';
import { validateRoutes } from './validate.ts';
import { validateCodeRoutes } from './validate-code.ts';

/**
 * The operations of a vault on its resources (each module registers its own GET and POST routes): read-only but
 * for `$meta-add` and `$meta-delete`, which write as a patch does.
 */
export function resourceOperationRoutes(app: FastifyInstance, h: RouteHelpers): void {
  everythingRoutes(app, h);
  validateRoutes(app, h);
  expandRoutes(app, h);
  validateCodeRoutes(app, h);
  lookupRoutes(app, h);
  subsumesRoutes(app, h);
  translateRoutes(app, h);
  lastNRoutes(app, h);
  documentRoutes(app, h);
  docrefRoutes(app, h);
  metaRoutes(app, h);
}
