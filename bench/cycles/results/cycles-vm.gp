
set terminal png size 1200,420
set output '/tmp/imgx/cycles-vm-policies.png'
set multiplot layout 1,3 title 'Finalize policies on cyclic VM guest, 1000 Mbit/s workloads (bars: mean, whiskers: p25-p75)'
set style data histograms
set style histogram errorbars gap 2 lw 1
set style fill solid 0.6 border -1
set boxwidth 0.8
set yrange [0:*]
set grid ytics
set xtics rotate by -20
unset key
set title 'stale chunks at finalize'
plot '/work/main/bench/cycles/results/cycles-vm-summary.dat' using 2:3:4:xtic(1) lc rgb '#c0504d'
set title 'bytes transferred (MiB)'
plot '/work/main/bench/cycles/results/cycles-vm-summary.dat' using 5:6:7:xtic(1) lc rgb '#4f81bd'
set title 'total migration time (s)'
plot '/work/main/bench/cycles/results/cycles-vm-summary.dat' using 8:9:10:xtic(1) lc rgb '#9bbb59'
unset multiplot

set terminal png size 800,420
set output '/tmp/imgx/cycles-vm-stale-by-period.png'
set title 'Mean stale chunks at finalize by workload period (duty 0.3 and 0.6)'
set style histogram clustered gap 1
set key top left
set xtics norotate
set ylabel 'chunks (of 32768)'
plot '/work/main/bench/cycles/results/cycles-vm-by-period.dat' using 2:xtic(1) title 'immediate', '/work/main/bench/cycles/results/cycles-vm-by-period.dat' using 3:xtic(1) title 'threshold', '/work/main/bench/cycles/results/cycles-vm-by-period.dat' using 4:xtic(1) title 'local-minimum', '/work/main/bench/cycles/results/cycles-vm-by-period.dat' using 5:xtic(1) title 'cycle'
