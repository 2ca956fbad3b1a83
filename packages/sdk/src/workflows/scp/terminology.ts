/** CARA Shared Care Plan identifiers and code systems (reference/domain.md §1; inconsistencies noted there). */
export const CARA = {
  namespace: 'https://terminology.cara.ch/CodeSystem/fhirvault-namespace',
  scpTag: 'cara:scp',
  goalType: 'https://terminology.cara.ch/CodeSystem/scp-custom-goal-type',
  targetStatus: 'https://terminology.cara.ch/StructureDefinition/scp-goal-target-status',
  /** The profile name CARA's own example uses (inconsistency (b): the SUSHI id would be scp-external-observation). */
  externalObservationProfile: 'https://terminology.cara.ch/StructureDefinition/ScpObservationExternal',
  account: 'urn:cara:account',
  externalId: 'urn:cara:external_id',
  externalSystem: 'urn:cara:external_system',
  orgId: 'urn:cara:org_id',
  gln: 'urn:cara:gln',
  /** GS1's OID for GLNs: some sources identify organizations with it (inconsistency (a)). */
  gs1Gln: 'urn:oid:2.51.1.3',
} as const;

export const SNOMED = 'http://snomed.info/sct';
export const LOINC = 'http://loinc.org';
export const INTERPRETATION = 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation';

/**
 * LOINC codes of vitals and labs → the SNOMED CT target types of CARA's ScpTargetType. One table, the only
 * place the mapping lives; an Observation coded with SNOMED CT directly needs no mapping.
 */
export const LOINC_TO_TARGET_TYPE: Readonly<Record<string, string>> = {
  '85354-9': '75367002', // Blood pressure panel → blood pressure (components carry systolic/diastolic)
  '55284-4': '75367002', // Blood pressure systolic and diastolic → blood pressure
  '8480-6': '271649006', // Systolic blood pressure
  '8462-4': '271650006', // Diastolic blood pressure
  '29463-7': '27113001', // Body weight
  '3141-9': '27113001', // Body weight measured
  '9279-1': '86290005', // Respiratory rate
  '59408-5': '103228002', // Oxygen saturation by pulse oximetry
  '2708-6': '103228002', // Oxygen saturation in arterial blood
  '8867-4': '8499008', // Heart rate → pulse
  '8310-5': '386725007', // Body temperature
  '4548-4': '408591000', // Hemoglobin A1c
  '2339-0': '405176005', // Glucose [mass/volume] in blood
  '2345-7': '405176005', // Glucose [mass/volume] in serum or plasma
  '2093-3': '853681000000104', // Cholesterol
  '2571-8': '850991000000104', // Triglyceride
  '13457-7': '1028861000000101', // LDL cholesterol (calculated)
  '2085-9': '1028841000000102', // HDL cholesterol
  '19935-6': '446658008', // Peak expiratory flow
};

/** Target types that are panels of others: a blood-pressure panel serves systolic and diastolic targets. */
export const PANEL_PARTS: Readonly<Record<string, readonly string[]>> = {
  '75367002': ['271649006', '271650006'],
};

export const TARGET_TYPE_DISPLAY: Readonly<Record<string, string>> = {
  '75367002': 'Blood pressure',
  '271649006': 'Systolic blood pressure',
  '271650006': 'Diastolic blood pressure',
  '27113001': 'Body weight',
  '86290005': 'Respiratory rate',
  '103228002': 'Hemoglobin saturation with oxygen',
  '8499008': 'Pulse',
  '386725007': 'Body temperature',
  '408591000': 'Hemoglobin A1c',
  '405176005': 'Blood glucose',
};

/** The SNOMED target type a coded concept measures, if any. */
export function targetTypeOf(code: { coding?: { system?: string; code?: string }[] } | undefined): string | undefined {
  for (const c of code?.coding ?? []) {
    if (c.system === SNOMED && c.code) return c.code;
    if (c.system === LOINC && c.code && LOINC_TO_TARGET_TYPE[c.code]) return LOINC_TO_TARGET_TYPE[c.code];
  }
  return undefined;
}

/** UCUM spellings that mean the same unit, so that `mmHg` compares with `mm[Hg]`. Nothing is converted. */
const UNIT_ALIASES: Readonly<Record<string, string>> = {
  mmhg: 'mm[hg]',
  'beats/min': '/min',
  bpm: '/min',
  '{beats}/min': '/min',
};

export function sameUnit(a: string | undefined, b: string | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  const norm = (u: string) => UNIT_ALIASES[u.toLowerCase()] ?? u.toLowerCase();
  return norm(a) === norm(b);
}
