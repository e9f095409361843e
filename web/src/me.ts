// Who is logged in, as every view needs it.
import type { User } from "./gen/portcullis/v1/user_pb";

/** The logged-in person and what their login allows. */
export interface Me {
  user: User;
  permissions: string[];
  maxSessionMinutes: number;
  defaultSessionMinutes: number;
}
