// MT.java - four threads writing long arrays (and now and then building
// strings) for the given milliseconds: the JVM workload of the stop-time
// figures in doc/PRELOAD.md.  javac -d DIR MT.java; java -cp DIR MT 8000
public class MT {
    static volatile boolean stop;
    public static void main(String[] a) throws Exception {
        int n = 4;
        long[][] data = new long[n][1 << 16];
        Thread[] t = new Thread[n];
        for (int i = 0; i < n; i++) {
            final int id = i;
            t[i] = new Thread(() -> {
                long v = 0;
                long[] d = data[id];
                while (!stop) {
                    v++;
                    d[(int) (v & 0xffff)] = v;
                    if ((v & 0xfffff) == 0) {
                        StringBuilder sb = new StringBuilder();
                        for (int k = 0; k < 1000; k++) sb.append(k);
                    }
                }
            });
            t[i].start();
        }
        Thread.sleep(Long.parseLong(a[0]));
        stop = true;
        for (Thread x : t) x.join();
        System.out.println("done");
    }
}
