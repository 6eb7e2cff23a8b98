/** What the browser test's page leaves in `window.uploadReport` when it is done (page/main.ts). */
export interface UploadReport {
  ok: boolean;
  /** The error and its stack when the page failed. */
  error?: string;
  clientId?: string;
  uploadCalls?: number;
  /** Rows left in the SDK's upload queue (`ps_crud`). */
  queued?: number;
  ids?: { list: string; todos: string[]; rejectedList: string; laterList: string; hugeTodos: string[] };
  /** One per `onRejected()` call: the code, the table named in the result, the distinct "OP table" pairs. */
  rejected?: { code: string; table: unknown; ops: string[]; operations: number }[];
}
