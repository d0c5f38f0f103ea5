// Must NOT compile: .ci/consumer-tests.sh asserts that tsc fails here, with errors that name
// the misspelt event ('opne') and the misspelt option ('conectTimeoutMs'), and nowhere else.
import { RealtimeClient } from 'realtime-client';

const client = new RealtimeClient('http://127.0.0.1:8080/realtime', { conectTimeoutMs: 5000 });
client.on('opne', () => console.log('open'));
