import { BSN_SYSTEM, isValidBsn, type Professional, type Resource } from '@carevault/sdk';
import type { RegisteredIdp } from '../saml/idps.ts';
import { LaunchRefused } from '../saml/mapping.ts';
import type { ViewerRuntime } from './runtime.ts';

interface TaskLike extends Resource {
  for?: { reference?: string };
}
interface PatientLike extends Resource {
  identifier?: { system?: string; value?: string }[];
  name?: { text?: string; family?: string; given?: string[] }[];
  birthDate?: string;
}

/**
 * Zorgplatform (seq-1-zp): the assertion's workflow id names a FHIR Task at the IdP's FHIR base; its `for` is the
 * patient, whose BSN the viewer needs. Read as this viewer, for the professional who launched it.
 */
export async function patientOfWorkflow(
  runtime: ViewerRuntime,
  idp: RegisteredIdp,
  workflowId: string,
  professional: Professional,
): Promise<{ bsn: string; name?: string | undefined; birthDate?: string | undefined }> {
  if (!idp.taskFhirBase || !idp.taskClientId) {
    throw new LaunchRefused('this identity provider has no FHIR base for its workflow Tasks');
  }
  const client = runtime.open(
    {
      name: idp.name,
      organizationOid: professional.organizationOid,
      fhirBase: idp.taskFhirBase,
      clientId: idp.taskClientId,
      style: 'generic',
      ca: idp.taskCa,
    },
    professional,
  );
  let patient: PatientLike;
  try {
    const found = await client.search<TaskLike>('Task', { identifier: workflowId });
    const tasks = (found.entry ?? []).flatMap((e) => (e.resource?.resourceType === 'Task' ? [e.resource] : []));
    if (tasks.length !== 1) throw new LaunchRefused(`no single Task has the workflow id ${workflowId}`);
    const ref = /^Patient\/([A-Za-z0-9\-.]{1,64})$/.exec((tasks[0] as TaskLike).for?.reference ?? '');
    if (!ref) throw new LaunchRefused('the workflow Task names no patient');
    patient = await client.read<PatientLike>('Patient', ref[1] as string);
  } catch (err) {
    if (err instanceof LaunchRefused) throw err;
    throw new LaunchRefused('the workflow Task could not be read at the identity provider');
  }
  const bsn = patient.identifier?.find((i) => i.system === BSN_SYSTEM)?.value;
  if (!bsn || !isValidBsn(bsn)) {
    throw new LaunchRefused('Deze patiënt heeft een ongeldig of nog niet gevalideerd BSN nummer');
  }
  const n = patient.name?.[0];
  const name = n?.text ?? ([...(n?.given ?? []), n?.family].filter(Boolean).join(' ') || undefined);
  return { bsn, name, birthDate: patient.birthDate };
}
