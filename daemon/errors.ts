/** An error whose message is meant for the user as is (bad input, a conflict, a missing thing). */
export class UserError extends Error {
  constructor(
    message: string,
    readonly code: number = -32602,
  ) {
    super(message);
  }
}
